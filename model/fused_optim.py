"""Optimizers for a fused network: one update over k members, each with its own hyperparameters.

The update rules are PyTorch's (SGD with momentum/Nesterov and L2 weight decay, Adam, AdamW,
RMSprop; the defaults `train` uses), written once over member-major tensors: a parameter's first
dimension split into (k, ...) and each hyperparameter a (k, 1, ..., 1) column. A member's update
therefore equals the one its trial gets training alone, to float rounding. State (momentum
buffers, moments, step counts) is kept per parameter as (k, ...) tensors, so members can be taken
out and put in between steps.

Only the first dimension is ever split, never others merged: on CUDA the convolution weights are
channels_last, where (k, -1) is no view of them (merging dimensions across their strides is not a
view, and a copy would leave the update on the copy).
"""

from __future__ import annotations

import torch

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which `train` uses
ADAM_EPS = 1e-8
RMSPROP_ALPHA = 0.99  # torch.optim.RMSprop's defaults
RMSPROP_EPS = 1e-8
# Which state each optimizer keeps per parameter (all member-major, zero for a new member).
STATE = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq"),
         "rmsprop": ("square_avg", "momentum_buffer")}


def by_member(t: torch.Tensor, k: int) -> torch.Tensor:
    """`t` (k * n, ...) as a (k, n, ...) view, in any memory layout: member i is `[i]`."""
    return t.unflatten(0, (k, -1))


class FusedOptimizer:
    """`kind` is one of model.OPTIMIZERS; `hyper` maps lr, momentum, nesterov, weight_decay to a
    length-k tensor each (set `hyper["lr"]` between epochs for schedules)."""

    def __init__(self, kind: str, named_params: dict[str, torch.nn.Parameter], k: int,
                 hyper: dict[str, torch.Tensor], state: dict[str, dict[str, torch.Tensor]] | None = None,
                 steps: torch.Tensor | None = None):
        self.kind, self.params, self.k, self.hyper = kind, named_params, k, hyper
        self.state = state if state is not None else {
            name: {s: by_member(torch.zeros_like(p), k) for s in STATE[kind]} for name, p in named_params.items()}
        first = next(iter(named_params.values()))
        self.steps = steps if steps is not None else torch.zeros(k, 1, device=first.device, dtype=first.dtype)  # Adam's bias correction

    @property
    def hyper(self) -> dict[str, torch.Tensor]:
        return self._hyper

    @hyper.setter
    def hyper(self, hyper: dict[str, torch.Tensor]) -> None:
        # Whether all or none of the members use Nesterov, read here once: read in `step` it
        # would make the host wait for the GPU on every step.
        self._hyper = hyper
        flags = [v > 0 for v in hyper["nesterov"].tolist()] if "nesterov" in hyper else []
        self._nesterov = (bool(flags) and all(flags), not any(flags))

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # In place wherever the arithmetic allows: a fresh tensor the size of K networks per
        # operation costs more than the update itself (page faults on a CPU, memory traffic on a GPU).
        hyper = {name: v.view(self.k, 1) for name, v in self.hyper.items()}
        if self.kind in ("adam", "adamw"):
            self.steps += 1
            b1, b2 = ADAM_BETAS
            hyper["step_size"] = hyper["lr"] / (1 - b1 ** self.steps)
            hyper["bias2_sqrt"] = (1 - b2 ** self.steps).sqrt()
            hyper["decay"] = 1 - hyper["lr"] * hyper["weight_decay"]
        all_nesterov, no_nesterov = self._nesterov
        columns: dict[int, dict[str, torch.Tensor]] = {}  # per tensor rank: (k, 1, ..., 1) columns
        for name, p in self.params.items():
            if p.grad is None:
                continue
            w = by_member(p, self.k)
            g = by_member(p.grad, self.k)  # the gradient is used up here: it serves as scratch
            if w.dim() not in columns:
                columns[w.dim()] = {n: v.view(self.k, *[1] * (w.dim() - 1)) for n, v in hyper.items()}
            col = columns[w.dim()]
            lr, wd, momentum = col["lr"], col["weight_decay"], col.get("momentum")
            st = self.state[name]
            if self.kind == "sgd":
                g.addcmul_(wd, w)
                buf = st["momentum_buffer"].mul_(momentum).add_(g)
                if all_nesterov:
                    g.addcmul_(momentum, buf)
                elif no_nesterov:
                    g = buf
                else:
                    g = torch.where(col["nesterov"] > 0, g.addcmul_(momentum, buf), buf)
                w.addcmul_(g, lr, value=-1)
            elif self.kind in ("adam", "adamw"):
                if self.kind == "adamw":
                    w.mul_(col["decay"])  # decoupled weight decay
                else:
                    g.addcmul_(wd, w)
                st["exp_avg"].lerp_(g, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = st["exp_avg_sq"].sqrt().div_(col["bias2_sqrt"]).add_(ADAM_EPS).div_(col["step_size"])
                w.addcdiv_(st["exp_avg"], denom, value=-1)
            else:  # rmsprop
                g.addcmul_(wd, w)
                st["square_avg"].mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
                avg = st["square_avg"].sqrt().add_(RMSPROP_EPS)
                buf = st["momentum_buffer"].mul_(momentum).addcdiv_(g, avg)
                w.addcmul_(buf, lr, value=-1)

    # ---- members in and out

    @torch.no_grad()
    def reset_member(self, i: int) -> None:
        """Slot i's state as a new member's: zero (a member that joined into a leaver's slot)."""
        for st in self.state.values():
            for t in st.values():
                t[i].zero_()
        self.steps[i].zero_()

    def regroup(self, keep: list[int], new: int, named_params: dict[str, torch.nn.Parameter]) -> "FusedOptimizer":
        """The optimizer for a regrouped network: the state of members `keep` (in that order)
        followed by `new` fresh members."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.steps.device)
        k = len(keep) + new

        def grow(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t.index_select(0, idx), t.new_zeros(new, *t.shape[1:])])

        state = {name: {s: grow(t) for s, t in st.items()} for name, st in self.state.items()}
        return FusedOptimizer(self.kind, named_params, k, {}, state, grow(self.steps))
