"""Device choice and mixed precision: the one place every path (training, prediction, bench, export) asks."""

from __future__ import annotations

import contextlib
import os

import torch

from afrocomet.errors import AfroCometError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the GPU of this process's local rank when CUDA is available, else the CPU."""
    if name == "auto":  # under `accelerate launch`, each process takes the GPU of its local rank
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise AfroCometError(f"unknown device '{name}' (expected auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AfroCometError(f"device '{name}' was asked for but CUDA is not available")
    return device


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA, full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fused_ok(device: torch.device) -> bool:
    """Whether the fused AdamW kernel exists for this device and torch version."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4) and device.type in ("cpu", "cuda")
