"""Device choice and mixed precision: the one place every path (training, prediction, bench, export) asks."""

from __future__ import annotations

import contextlib
import os
import time

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

BUSY_FRACTION = 0.5  # other processes keeping this share of the cores busy: timings are unreliable
SAMPLE_SECONDS = 0.25  # how long `busy_cores_by_others` watches the CPU


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


def _cpu_ticks() -> tuple[int, int, int]:
    """(all CPUs' ticks, their busy ticks, this process's own ticks: every thread, user + system)."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    with open("/proc/self/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # from field 3 (state) on: utime is field 14, stime 15
    return sum(values), sum(values) - values[3] - values[4], int(fields[11]) + int(fields[12])


def busy_cores_by_others(window: float = SAMPLE_SECONDS) -> float | None:
    """Cores kept busy by other processes, watched for `window` seconds (Linux's /proc: all busy CPU
    time minus this process's own); None where there is no /proc. Unlike the load average, a run's
    own training a moment ago does not count as the machine being busy."""
    try:
        total0, busy0, own0 = _cpu_ticks()
        time.sleep(window)
        total1, busy1, own1 = _cpu_ticks()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return 0.0
    per_cpu = (total1 - total0) / (os.cpu_count() or 1)
    return round(max(0.0, (busy1 - busy0) - (own1 - own0)) / per_cpu, 2)


def machine_busy() -> float | None:
    """Cores busy with other work: watched on /proc where it exists, else the 1-minute load average."""
    others = busy_cores_by_others()
    return load_average() if others is None else others


def choose_threads(requested: int | None = None) -> int:
    """The CPU thread count for a timing or inference path: `requested` when given, else the cores
    that are free, min(available cores, cores - busy cores rounded), at least 1. A small model
    whose thread pool oversubscribes a busy CPU collapses (batch-1 p50 14 ms -> 496 ms on 2 cores
    with one busy), so a busy machine gets fewer threads. Training does not call this unless the
    user asks for a count: results depend on the thread count (float summation order)."""
    if requested is not None:
        if requested < 1:
            raise AfroCometError(f"threads must be at least 1, got {requested}")
        return int(requested)
    cores, busy = available_cores(), machine_busy()
    free = cores if busy is None else round(cores - busy)
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
    the cores, the cores other work kept busy before (`machine_busy()` taken by the caller) and now;
    warns once, in one line, when it was busy."""
    from afrocomet.quiet import warn

    cores, after = cores or available_cores(), machine_busy()
    busy = is_busy(before, cores) or is_busy(after, cores)
    if busy:
        warn(f"the machine was busy while timing (other work kept {before} cores busy before, {after} after, "
             f"of {cores}; {threads} thread(s) used): latency and throughput are unreliable; rerun on an idle machine")
    return {"threads": threads, "cores": cores, "busy_cores_before": before, "busy_cores_after": after, "busy": busy}
