"""The baseline to beat: training written the way the paper's code works.

A per-image Dataset that decodes each item's pixel string and histogram-equalises it, a
DataLoader that collates batches on the host, an fp32 model, and a loss read back to the host
every step (the usual `running_loss += loss.item()`). Used by `sweep bench` only.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from data import equalize

from .device import resolve_device
from .net import FERNet


class PixelStringDataset(TorchDataset):
    """FER2013 rows as the CSV holds them: a space-separated pixel string and a label."""

    def __init__(self, pixels: list[str], labels: np.ndarray):
        self.pixels = pixels
        self.labels = labels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int):
        img = np.array(self.pixels[i].split(), dtype=np.uint8).reshape(1, 48, 48)
        img = equalize(img)
        return torch.from_numpy(img).float().div(255.0), int(self.labels[i])


def to_pixel_strings(images: np.ndarray) -> list[str]:
    return [" ".join(map(str, img.ravel().tolist())) for img in images]


def reference_train_speed(pixels: list[str], labels: np.ndarray, *, steps: int, batch_size: int = 128,
                          width: float = 1.0, lr: float = 0.05, seed: int = 0, device: str = "auto",
                          warmup_steps: int = 0) -> float:
    """Training images per second of the paper-style pipeline over `steps` steps, after
    `warmup_steps` untimed ones (a GPU's first steps pay for its library start-up)."""
    dev = resolve_device(device)
    torch.manual_seed(seed)
    loader = DataLoader(PixelStringDataset(pixels, labels), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=0)
    model = FERNet(width).to(dev)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=1e-5)
    loss_fn = nn.CrossEntropyLoss()
    running_loss = 0.0
    seen = 0
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        if step == warmup_steps + steps:
            break
        if step == warmup_steps:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seen, t0 = 0, time.perf_counter()
        x, y = x.to(dev), y.to(dev)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        seen += len(y)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return seen / (time.perf_counter() - t0)
