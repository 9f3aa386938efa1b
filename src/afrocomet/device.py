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


# ----------------------------------------------------------------------------- CPU threads and machine load

BUSY_FRACTION = 0.5  # 1-minute load at or above this share of the cores: timings are unreliable


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The machine's 1-minute load average (runnable processes), or None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def choose_threads(requested: int | None = None) -> int:
    """The CPU thread count for a timing or inference path: `requested` when given, else the cores
    that are free, min(available cores, cores - 1-minute load rounded), at least 1. A small model
    whose thread pool oversubscribes a busy CPU collapses (batch-1 p50 14 ms -> 496 ms on 2 cores
    with one busy), so a busy machine gets fewer threads. Training does not call this unless the
    user asks for a count: results depend on the thread count (float summation order)."""
    if requested is not None:
        if requested < 1:
            raise AfroCometError(f"threads must be at least 1, got {requested}")
        return int(requested)
    cores, load = available_cores(), load_average()
    free = cores if load is None else round(cores - load)
    return max(1, min(cores, free))


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op thread count set to `threads` (None: left as it is) inside, restored after;
    yields the count in use."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def is_busy(load: float | None, cores: int) -> bool:
    return load is not None and load >= BUSY_FRACTION * cores


def machine_load(before: float | None, threads: int, cores: int | None = None) -> dict:
    """What a timing records (results.json `efficiency.load`, bench JSON `load`): the threads used,
    the cores, the 1-minute load average before and now; warns once, in one line, when it was busy."""
    from afrocomet.quiet import warn

    cores, after = cores or available_cores(), load_average()
    busy = is_busy(before, cores) or is_busy(after, cores)
    if busy:
        warn(f"the machine was busy while timing (1-minute load {before} before, {after} after, on {cores} cores; "
             f"{threads} thread(s) used): latency and throughput are unreliable; rerun on an idle machine")
    return {"threads": threads, "cores": cores, "load_1min_before": before, "load_1min_after": after, "busy": busy}
