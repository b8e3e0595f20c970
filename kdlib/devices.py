"""Device selection and mixed precision: CUDA with bf16 autocast when present, else CPU fp32."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(device="auto") -> torch.device:
    """"auto" -> cuda if available else cpu; anything torch.device accepts otherwise."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', a string like 'cpu'/'cuda:0' or a torch.device, "
                        f"got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def autocast(device: torch.device):
    """bf16 autocast on CUDA, a no-op context on CPU (keeps CPU runs bit-reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


CHANNELS_LAST_DEVICES = ("cuda", "cpu")
"""Device types on which conv nets train in channels_last memory format. On the CPU (oneDNN
convolutions, one thread, batches of 64 digits images) it measured 10-15% less time per
training step than the contiguous format: 22 stacked resnet8 students from a resnet20,
12.9/11.2 -> 11.0/9.7 ms per student-step in two alternating runs (1 thread), 10.3 -> 7.3 ms
with 2 threads; a single resnet8 11.6 -> 10.2 ms, resnet20 29.3 -> 23.7 ms. Only float32
models convert (oneDNN has no float64 kernels; float64 test runs stay contiguous)."""


def channels_last(device: torch.device, model: torch.nn.Module | None = None) -> bool:
    """Whether `model` (a conv net; None: any) trains in channels_last on `device`."""
    if torch.device(device).type not in CHANNELS_LAST_DEVICES:
        return False
    if model is None:
        return True
    params = list(model.parameters())
    return (any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
            and bool(params) and params[0].dtype == torch.float32)


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to `device`; channels_last memory format for float32 conv nets on the devices of
    CHANNELS_LAST_DEVICES (CUDA and the CPU)."""
    model = model.to(device)
    if channels_last(device, model):
        model = model.to(memory_format=torch.channels_last)
    return model
