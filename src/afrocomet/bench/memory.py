"""Peak memory that running a function adds: CUDA tensors, or the process's resident set on Linux."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Any, Callable

import torch

from afrocomet.errors import AfroCometError


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AfroCometError(f"{field} not found", path="/proc/self/status")


def release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap pages back to the OS (no-op elsewhere)."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        trim = getattr(ctypes.CDLL(libc_name), "malloc_trim", None)
        if trim is not None:
            trim(0)


def peak_memory(fn: Callable[[], Any], device: str | torch.device = "cpu") -> int:
    """Peak memory in bytes that running `fn()` adds on top of what was in use before it.

    CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (tensors only, not
    the caching allocator's reserve or the CUDA context). CPU (Linux): the process's peak resident
    set size. Free heap pages are first returned to the OS (gc + malloc_trim) so that `fn` cannot
    hide its use in them, then the kernel's high-water mark is reset (`/proc/self/clear_refs`,
    value 5) and read back (VmHWM) after `fn`. It counts the whole process, so other threads'
    allocations during `fn` are included.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    if device.type != "cpu":
        raise AfroCometError(f"peak memory is measured on cpu or cuda, not {device.type}")
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
    except OSError as exc:
        raise AfroCometError(f"CPU peak memory needs Linux's /proc/self/clear_refs ({exc.strerror or exc})",
                             path="/proc/self/clear_refs") from exc
    before = _proc_status_kib("VmRSS")
    fn()
    return max(0, _proc_status_kib("VmHWM") - before) * 1024
