"""The optimizers of a trial, written so that one CUDA graph can replay their update.

PyTorch's own optimizers read the learning rate and Adam's step count on the host (their
`capturable` forms exist, but not on a CPU, where the tests run). Here everything that changes
during a trial lives on the trial's device: the lr (a 0-dim tensor the lr schedule writes between
epochs) and Adam's step count; everything fixed for the trial (momentum,
betas, weight decay, Nesterov) is a Python number, baked into a captured graph as it is into any
kernel's arguments. State is allocated up front (zeros), so the first step runs the same
operations as every later one: a momentum buffer of zeros times momentum plus the gradient is the
gradient, exactly what PyTorch's first step copies.

The update rules are `torch.optim`'s single-tensor ones (SGD with momentum/Nesterov and L2 weight
decay, Adam, AdamW, RMSprop with their defaults), operation for operation, over `torch._foreach_*`
calls (a few kernels for all parameters on CUDA, a loop of the same per-tensor kernels on a CPU).
What differs is where the lr enters: PyTorch computes `param - lr * update` as one fused
multiply-add with the lr as a host number; here it is `update * lr`, rounded, then subtracted, and
Adam's bias corrections are computed on the device (in float64, as on the host) and applied in
another order. A few roundings of the update differ: after a first step every weight is within
a few units in the last place of PyTorch's, and in float64 whole runs agree to ~1e-14
(tests/test_graph_step.py).
"""

from __future__ import annotations

import torch

from .config import TrainConfig

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which trials always used
ADAM_EPS = 1e-8
RMSPROP_ALPHA = 0.99  # torch.optim.RMSprop's defaults
RMSPROP_EPS = 1e-8


class StepOptimizer:
    """`cfg.optimizer` over `params`; `lr` is a device tensor, set with `set_lr` between steps."""

    def __init__(self, cfg: TrainConfig, params):
        self.params = [p for p in params if p.requires_grad]
        self.kind = cfg.optimizer
        self.momentum, self.nesterov, self.weight_decay = cfg.momentum, cfg.nesterov, cfg.weight_decay
        p0 = self.params[0]
        scalar = dict(device=p0.device, dtype=p0.dtype)
        self.lr = torch.tensor(cfg.lr, **scalar)  # what an update is multiplied by; made once, outside any step
        # The lr again, and Adam's step count, in float64: the scalars derived from them (Adam's
        # bias corrections, AdamW's decay factor) are computed in float64 as PyTorch computes
        # them on the host. In float32, 1 - 0.999 ** 1 alone is off by 5e-5 (0.999 rounded).
        self.lr64 = torch.tensor(cfg.lr, device=p0.device, dtype=torch.float64)
        self.steps = torch.zeros((), device=p0.device, dtype=torch.float64)
        zeros = lambda: [torch.zeros_like(p) for p in self.params]  # noqa: E731 - same layout as each parameter
        self.buffers = zeros() if self.kind in ("sgd", "rmsprop") and self.momentum != 0 else []
        self.exp_avgs = zeros() if self.kind in ("adam", "adamw") else []
        self.sq_avgs = zeros() if self.kind in ("adam", "adamw", "rmsprop") else []

    def set_lr(self, lr: float) -> None:
        """Between steps (an epoch's end): a kernel writes it, the host never waits."""
        self.lr.fill_(lr)
        self.lr64.fill_(lr)

    def zero_grad(self) -> None:
        # The next backward writes fresh gradients instead of adding into kept ones: no extra pass
        # over every gradient per step, and inside a CUDA graph they land in its private pool, at
        # the same addresses on every replay.
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        getattr(self, f"_{self.kind}")(grads)

    def _sgd(self, grads) -> None:
        wd, m = self.weight_decay, self.momentum
        if wd != 0:
            grads = torch._foreach_add(grads, self.params, alpha=wd)
        if m != 0:
            torch._foreach_mul_(self.buffers, m)
            torch._foreach_add_(self.buffers, grads)
            grads = torch._foreach_add(grads, self.buffers, alpha=m) if self.nesterov else self.buffers
        self._descend(grads)

    def _adam(self, grads) -> None:
        beta1, beta2 = ADAM_BETAS
        dtype = self.lr.dtype
        self.steps.add_(1)
        wd = self.weight_decay
        if wd != 0:
            if self.kind == "adamw":
                torch._foreach_mul_(self.params, (1 - self.lr64 * wd).to(dtype))
            else:
                grads = torch._foreach_add(grads, self.params, alpha=wd)
        torch._foreach_lerp_(self.exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(self.sq_avgs, beta2)
        torch._foreach_addcmul_(self.sq_avgs, grads, grads, value=1 - beta2)
        step_size = (self.lr64 / (1 - torch.pow(beta1, self.steps))).to(dtype)
        denom = torch._foreach_sqrt(self.sq_avgs)
        torch._foreach_div_(denom, (1 - torch.pow(beta2, self.steps)).sqrt().to(dtype))
        torch._foreach_add_(denom, ADAM_EPS)
        update = torch._foreach_div(self.exp_avgs, denom)
        torch._foreach_mul_(update, step_size)
        torch._foreach_sub_(self.params, update)

    _adamw = _adam

    def _rmsprop(self, grads) -> None:
        wd, m = self.weight_decay, self.momentum
        if wd != 0:
            grads = torch._foreach_add(grads, self.params, alpha=wd)
        torch._foreach_mul_(self.sq_avgs, RMSPROP_ALPHA)
        torch._foreach_addcmul_(self.sq_avgs, grads, grads, value=1 - RMSPROP_ALPHA)
        avg = torch._foreach_sqrt(self.sq_avgs)
        torch._foreach_add_(avg, RMSPROP_EPS)
        if m > 0:
            torch._foreach_mul_(self.buffers, m)
            torch._foreach_addcdiv_(self.buffers, grads, avg)
            self._descend(self.buffers)
        else:
            self._descend(torch._foreach_div(grads, avg))

    def _descend(self, updates) -> None:
        torch._foreach_sub_(self.params, torch._foreach_mul(updates, self.lr))
