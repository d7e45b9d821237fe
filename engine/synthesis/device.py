"""Which torch device to compute on: one rule for the whole engine."""
from __future__ import annotations

import torch

from engine.errors import InputError


def resolve_device(device=None) -> torch.device:
    """None or "auto": CUDA when available, else the CPU; "cpu" / "cuda[:n]": that device, or a
    one-line InputError when CUDA is asked for and absent."""
    if isinstance(device, torch.device):
        dev = device
    elif device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(str(device))
        except RuntimeError:
            raise InputError(f"unknown device {device!r}: use cpu, cuda or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was asked for but is not available on this machine: use --device cpu")
    return dev
