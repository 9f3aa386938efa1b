"""Helpers shared by the benchmark scripts: quick random-weight models, batches, tables, JSON."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


# glibc: keep freed memory in the heap, so that peak and step-time numbers are not dominated by mmap/munmap
ALLOCATOR = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def with_allocator_env() -> None:
    """Run this script again with ALLOCATOR set (glibc reads it only at start-up)."""
    import sys

    if os.environ.get("MALLOC_MMAP_MAX_") is None:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ALLOCATOR})


def random_model(preset: str, task: str = "mlm", *, vocab_size: int | None = None, seed: int = 0):
    """A preset model with random weights, made quickly (afrocomet.bench.random_weights_model)."""
    from afrocomet.bench import random_weights_model

    return random_weights_model(preset, task, vocab_size=vocab_size, seed=seed)


def mlm_batch(batch_size: int, seq_len: int, vocab_size: int, *, p: float = 0.15, seed: int = 0,
              mask_id: int | None = None) -> dict[str, torch.Tensor]:
    """Random token ids (all real, <s> ... </s>), `p` of the inner positions masked for MLM."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab_size - 1, (batch_size, seq_len), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    chosen = torch.rand(batch_size, seq_len, generator=g) < p
    chosen[:, 0] = chosen[:, -1] = False
    chosen[0, 1] = True  # at least one
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    ids = ids.masked_fill(chosen, vocab_size - 1 if mask_id is None else mask_id)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mlm_labels": labels}


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of `rows` (dicts) with the given columns."""
    cells = [columns] + [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: str | Path, data: dict) -> None:
    from afrocomet.io import atomic_write_json

    atomic_write_json(Path(path), data)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def busy_before(load_before: list[float] | None, note: str) -> bool:
    """True, with a printed warning ending in `note`, when the load average before a timing run
    was above half the cores (other processes then compete for the CPU)."""
    busy = max(load_before[0] if load_before else 0.0, 0.0) > 0.5 * (os.cpu_count() or 1)
    if busy:
        print(f"warning: load average {load_before[0]} on {os.cpu_count()} cores before the run: {note}")
    return busy


def timing_fields(load_before, load_after, busy: bool, t0: float) -> dict:
    """The fields every timing benchmark's JSON ends with: machine, allocator, load, wall time."""
    return {"machine": machine(), "allocator_env": ALLOCATOR, "load_average_before": load_before,
            "load_average_after": load_after, "busy": busy, "wall_seconds": round(time.perf_counter() - t0, 1)}
