"""K copies of the paper's network as one module (horizontal fusion, as HFTA does it).

`FusedFERNet(k, width)` mirrors `FERNet(width)` layer for layer, with the same state-dict names:

| FERNet          | FusedFERNet                                                        |
|-----------------|--------------------------------------------------------------------|
| Conv2d          | FusedConv2d: one grouped convolution, groups = k                   |
| BatchNorm2d(C)  | BatchNorm2d(k * C): per-channel statistics are per member          |
| RReLU, MaxPool, Dropout | the same layers: element- or channel-wise, so per member   |
| Flatten         | FusedFlatten: (B, k*C, H, W) -> (k, B, C*H*W), member-major        |
| Linear          | FusedLinear: one batched matmul over k weight matrices             |

Input: (B, k, 48, 48), channel i being member i's image; output: logits (k, B, 7). Every
fused tensor is member-major, so `tensor.view(k, *plain_shape)[i]` is member i's tensor: that is
how members are loaded, read back, added and dropped (`stacked_state`, `load_stacked`).

Random layers (dropout, RReLU slopes) draw from one random stream for the whole group, so a
member's masks depend on its group: a fused trial is the same experiment as a lone one, not
bit-identical to it. Everything else (weights, data order, augmentation, updates) is per member.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .net import CONV_CHANNELS, FC_UNITS, FERNet, _scaled


class FusedConv2d(nn.Module):
    """k Conv2d(c_in, c_out, 3, padding=1) as one grouped convolution over k * c_in channels."""

    def __init__(self, k: int, c_in: int, c_out: int, kernel: int = 3, padding: int = 1):
        super().__init__()
        self.k, self.padding = k, padding
        self.weight = nn.Parameter(torch.empty(k * c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(k * c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=self.padding, groups=self.k)


class FusedFlatten(nn.Module):
    """(B, k*C, H, W) -> (k, B, C*H*W): each member's features in Flatten's (C, H, W) order."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        return x.reshape(b, self.k, -1).transpose(0, 1)


class FusedLinear(nn.Module):
    """k Linear(n_in, n_out) as one batched matmul: (k, B, n_in) -> (k, B, n_out)."""

    def __init__(self, k: int, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(k, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class FusedFERNet(nn.Module):
    def __init__(self, k: int, width: float = 1.0, n_classes: int = 7, image_size: int = 48):
        super().__init__()
        if k < 1:
            raise ValueError("a fused network needs at least one member")
        self.k, self.width = k, width
        chans = [_scaled(c, width) for c in CONV_CHANNELS]
        units = [_scaled(u, width) for u in FC_UNITS]
        layers: list[nn.Module] = []
        c_in = 1
        for c in chans:
            layers += [FusedConv2d(k, c_in, c), nn.BatchNorm2d(k * c), nn.RReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(chans)
        self.classifier = nn.Sequential(
            FusedFlatten(k),
            nn.Dropout(0.2),
            FusedLinear(k, c_in * side * side, units[0]), nn.RReLU(),
            nn.Dropout(0.5),
            FusedLinear(k, units[0], units[1]), nn.RReLU(),
            FusedLinear(k, units[1], units[2]), nn.RReLU(),
            FusedLinear(k, units[2], n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    # ---- members in and out

    def stacked_state(self) -> dict[str, torch.Tensor]:
        """Every parameter and statistic as a (k, *FERNet's shape) view; BatchNorm's step counters
        (unused: its momentum is fixed) are left out."""
        shapes = plain_shapes(self.width)
        return {name: t.view(self.k, *shapes[name]) for name, t in self.state_dict(keep_vars=True).items()
                if name in shapes}

    @torch.no_grad()
    def load_stacked(self, stacked: dict[str, torch.Tensor]) -> "FusedFERNet":
        for name, t in self.stacked_state().items():
            t.copy_(stacked[name])
        return self

    @classmethod
    def on_device(cls, k: int, width: float, device: torch.device, dtype: torch.dtype = torch.float32) -> "FusedFERNet":
        """An uninitialised fused network made straight on `device` (nothing on the host, no random
        draws): for `load_stacked` to fill."""
        with torch.device("meta"):
            fused = cls(k, width).to(dtype)
        fused = fused.to_empty(device=device)
        for m in fused.features:
            if isinstance(m, nn.BatchNorm2d):
                m.num_batches_tracked.zero_()
        return fused

    @classmethod
    def from_members(cls, members: list[FERNet]) -> "FusedFERNet":
        fused = cls(len(members), _width_of(members[0]))
        states = [m.state_dict() for m in members]
        device = next(members[0].parameters()).device
        fused.to(device)
        return fused.load_stacked({n: torch.stack([s[n] for s in states]) for n in fused.stacked_state()})

    @torch.no_grad()
    def member(self, i: int, batches_tracked: int = 0) -> FERNet:
        """Member i as a plain FERNet (a copy), for evaluation, saving and prediction;
        `batches_tracked`: the member's own training steps, for BatchNorm's counters."""
        first = next(self.parameters())
        with torch.device("meta"):
            plain = FERNet(self.width)
        plain = plain.to_empty(device=first.device).to(first.dtype)
        state = {name: t[i].clone() for name, t in self.stacked_state().items()}
        for name, t in plain.state_dict().items():
            if name not in state:  # BatchNorm's num_batches_tracked
                state[name] = torch.full_like(t, batches_tracked)
        plain.load_state_dict(state)
        return plain


_SHAPES: dict[float, dict[str, torch.Size]] = {}


def plain_shapes(width: float) -> dict[str, torch.Size]:
    """FERNet's parameter and statistic shapes at `width` (built on the meta device: no memory)."""
    if width not in _SHAPES:
        with torch.device("meta"):
            _SHAPES[width] = {n: t.shape for n, t in FERNet(width).state_dict().items() if t.dim() > 0}
    return _SHAPES[width]


def _width_of(net: FERNet) -> float:
    return net.width
