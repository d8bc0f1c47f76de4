"""Optimizers for a fused network: one update over k members, each with its own hyperparameters.

The update rules are PyTorch's (SGD with momentum/Nesterov and L2 weight decay, Adam, AdamW,
RMSprop; the defaults `train` uses), written once over member-major tensors: a parameter viewed as
(k, n) and each hyperparameter a (k, 1) column. A member's update therefore equals the one its
trial gets training alone, to float rounding. State (momentum buffers, moments, step counts) is
kept per parameter as (k, ...) tensors, so members can be taken out and put in between steps.
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


class FusedOptimizer:
    """`kind` is one of model.OPTIMIZERS; `hyper` maps lr, momentum, nesterov, weight_decay to a
    length-k tensor each (set `hyper["lr"]` between epochs for schedules)."""

    def __init__(self, kind: str, named_params: dict[str, torch.nn.Parameter], k: int,
                 hyper: dict[str, torch.Tensor], state: dict[str, dict[str, torch.Tensor]] | None = None,
                 steps: torch.Tensor | None = None):
        self.kind, self.params, self.k, self.hyper = kind, named_params, k, hyper
        self.state = state if state is not None else {
            name: {s: torch.zeros_like(p).view(k, -1) for s in STATE[kind]} for name, p in named_params.items()}
        dev = next(iter(named_params.values())).device
        self.steps = steps if steps is not None else torch.zeros(k, 1, device=dev)  # Adam's bias correction

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # In place wherever the arithmetic allows: a fresh tensor the size of K networks per
        # operation costs more than the update itself (page faults on a CPU, memory traffic on a GPU).
        col = {name: v.view(self.k, 1) for name, v in self.hyper.items()}
        lr, wd, momentum = col["lr"], col["weight_decay"], col.get("momentum")
        if self.kind in ("adam", "adamw"):
            self.steps += 1
            b1, b2 = ADAM_BETAS
            step_size = lr / (1 - b1 ** self.steps)
            bias2_sqrt = (1 - b2 ** self.steps).sqrt()
            decay = 1 - lr * wd
        if self.kind == "sgd":
            nesterov = col["nesterov"] > 0
            all_nesterov, no_nesterov = bool(nesterov.all()), not bool(nesterov.any())
        for name, p in self.params.items():
            if p.grad is None:
                continue
            w = p.view(self.k, -1)
            g = p.grad.view(self.k, -1)  # the gradient is used up here: it serves as scratch
            st = self.state[name]
            if self.kind == "sgd":
                g.addcmul_(wd, w)
                buf = st["momentum_buffer"].mul_(momentum).add_(g)
                if all_nesterov:
                    g.addcmul_(momentum, buf)
                elif no_nesterov:
                    g = buf
                else:
                    g = torch.where(nesterov, g.addcmul_(momentum, buf), buf)
                w.addcmul_(g, lr, value=-1)
            elif self.kind in ("adam", "adamw"):
                if self.kind == "adamw":
                    w.mul_(decay)  # decoupled weight decay
                else:
                    g.addcmul_(wd, w)
                st["exp_avg"].lerp_(g, 1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = st["exp_avg_sq"].sqrt().div_(bias2_sqrt).add_(ADAM_EPS).div_(step_size)
                w.addcdiv_(st["exp_avg"], denom, value=-1)
            else:  # rmsprop
                g.addcmul_(wd, w)
                st["square_avg"].mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
                avg = st["square_avg"].sqrt().add_(RMSPROP_EPS)
                buf = st["momentum_buffer"].mul_(momentum).addcdiv_(g, avg)
                w.addcmul_(buf, lr, value=-1)

    # ---- members in and out

    def regroup(self, keep: list[int], new: int, named_params: dict[str, torch.nn.Parameter]) -> "FusedOptimizer":
        """The optimizer for a regrouped network: the state of members `keep` (in that order)
        followed by `new` fresh members."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.steps.device)
        k = len(keep) + new

        def grow(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t.index_select(0, idx), t.new_zeros(new, *t.shape[1:])])

        state = {name: {s: grow(t) for s, t in st.items()} for name, st in self.state.items()}
        return FusedOptimizer(self.kind, named_params, k, {}, state, grow(self.steps))
