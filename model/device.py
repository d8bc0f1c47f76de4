"""Device choice and whether bf16 pays on it."""

from __future__ import annotations

import functools
import platform

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """`auto`: CUDA if present, else MPS, else CPU. Raises ValueError for a device that is not there."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device '{device}' (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}' requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device '{device}' requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device '{device}' requested but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device '{device}' (use auto, cpu, cuda or cuda:N)")
    return dev


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where the CPU has native bf16 dot products (AVX-512 BF16 or AMX); without them
    bf16 autocast was measured several times slower than fp32."""
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(device: torch.device, precision: str) -> bool:
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return device.type


AUTOTUNE = True  # benchmarks.profile turns it off to measure what the autotuner is worth


def autotune(device: torch.device) -> None:
    """On CUDA, let cuDNN time its algorithms for each convolution shape once and keep the fastest:
    a trial's steps all have the same shapes (the ragged last batch is dropped), so the search is
    paid once per shape and process. A choice by timing can differ between processes: CUDA results
    agree to float rounding across runs, not to the bit."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = AUTOTUNE
