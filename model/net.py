"""The network of Qu, Dhakal & Carrillo (2023), "Facial Emotion Recognition using CNN in PyTorch".

3 x [Conv3x3 pad 1 -> BatchNorm -> RReLU -> MaxPool 2] with 64/128/256 channels (48 -> 24 -> 12
-> 6), then Dropout 0.2 -> Linear 9216-4096 -> RReLU -> Dropout 0.5 -> Linear 4096-1024 -> RReLU
-> Linear 1024-256 -> RReLU -> Linear 256-7. At width 1: 42,582,919 trainable parameters and
about 257 MFLOP per forward image.

`width` scales every channel and hidden-unit count (0.25 -> 16/32/64 channels, FC 1024/256/64)
for quick runs on a CPU; width 1 is the paper's network exactly.
"""

from __future__ import annotations

import torch
from torch import nn

CONV_CHANNELS = (64, 128, 256)
FC_UNITS = (4096, 1024, 256)
CONV_INIT_STD = 0.04  # the authors initialise conv weights from N(0, 0.04), 0.04 being the std


def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class FERNet(nn.Module):
    def __init__(self, width: float = 1.0, n_classes: int = 7, image_size: int = 48):
        super().__init__()
        if not width > 0:
            raise ValueError("width must be positive")
        self.width = width
        chans = [_scaled(c, width) for c in CONV_CHANNELS]
        units = [_scaled(u, width) for u in FC_UNITS]
        layers: list[nn.Module] = []
        c_in = 1
        for c in chans:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.RReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(chans)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(c_in * side * side, units[0]), nn.RReLU(),
            nn.Dropout(0.5),
            nn.Linear(units[0], units[1]), nn.RReLU(),
            nn.Linear(units[1], units[2]), nn.RReLU(),
            nn.Linear(units[2], n_classes),
        )
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, CONV_INIT_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops(width: float = 1.0, image_size: int = 48) -> int:
    """Multiply-adds x 2 of one forward image (convolutions and linear layers)."""
    chans = [_scaled(c, width) for c in CONV_CHANNELS]
    units = [_scaled(u, width) for u in FC_UNITS]
    flops, c_in, side = 0, 1, image_size
    for c in chans:
        flops += 2 * side * side * c * c_in * 9
        c_in, side = c, side // 2
    dims = [c_in * side * side, *units, 7]
    flops += sum(2 * a * b for a, b in zip(dims, dims[1:]))
    return flops
