"""Per-batch preprocessing on the training device: [0, 1] scaling and augmentation, as
whole-batch tensor operations (the data set itself stays uint8 on the device)."""

from __future__ import annotations

import torch


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """(B, 48, 48) uint8 -> (B, 1, 48, 48) float32 in [0, 1], as the paper feeds its network."""
    return x_uint8.unsqueeze(1).float().div_(255.0)


def augment_draws(b: int, generator: torch.Generator, crop_pad: int = 4, flip: bool = True, device=None):
    """The random draws of `augment` for a batch of `b`: row and column offsets, flip mask.

    Drawn in the same order and sizes as `augment` draws them, so a caller that draws for several
    trials at once (the fused trainer) keeps each trial's random stream exactly as it is alone.
    Drawn on the generator's device; moved only where `device` is another (never inside a
    training step, which keeps its generator on its own device)."""
    here = generator.device
    want = torch.device(device) if device is not None else here
    same = want.type == here.type and want.index in (None, here.index)  # "cuda" is the generator's "cuda:0"
    move = (lambda t: t) if same else (lambda t: t.to(want))  # noqa: E731
    if crop_pad > 0:
        oy = move(torch.randint(0, 2 * crop_pad + 1, (b,), generator=generator, device=here))
        ox = move(torch.randint(0, 2 * crop_pad + 1, (b,), generator=generator, device=here))
    else:
        oy = ox = move(torch.zeros(b, dtype=torch.long, device=here))
    if flip:
        mask = move(torch.rand(b, generator=generator, device=here) < 0.5)
    else:
        mask = move(torch.zeros(b, dtype=torch.bool, device=here))
    return oy, ox, mask


def apply_augment(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, mask: torch.Tensor,
                  crop_pad: int = 4) -> torch.Tensor:
    """Crop each image of a (B, 1, H, W) batch at its offsets (zero padding) and flip where `mask`."""
    b, c, h, w = x.shape
    dev = x.device
    if crop_pad > 0:
        padded = torch.nn.functional.pad(x, (crop_pad,) * 4)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (B, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]  # (B, 1, W)
        x = padded[torch.arange(b, device=dev)[:, None, None], 0, rows, cols].unsqueeze(1)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def augment(x: torch.Tensor, generator: torch.Generator, crop_pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, on a whole (B, 1, H, W) batch."""
    oy, ox, mask = augment_draws(len(x), generator, crop_pad, flip, device=x.device)
    return apply_augment(x, oy, ox, mask, crop_pad)
