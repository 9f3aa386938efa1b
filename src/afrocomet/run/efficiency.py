"""Efficiency of the run's systems: teacher vs student on real test tweets (results.json `efficiency`)."""

from __future__ import annotations

import numpy as np
from torch import nn

from afrocomet.run.context import Context


def measure_efficiency(ctx: Context, teacher: nn.Module, student: nn.Module, n_texts: int = 200) -> dict:
    """Teacher vs student on real test tweets, side by side in this process (see afrocomet.bench)."""
    from afrocomet.bench import compare

    rng = np.random.default_rng(ctx.config.seed)
    texts = [t for ds in ctx.data.datasets.values() for t in ds.texts("test")]
    texts = [texts[i] for i in rng.permutation(len(texts))[:n_texts]]
    raw = compare(teacher, student, ctx.data.tokenizer, ctx.data.tokenizer, texts,
                  max_length=ctx.config.data.max_length, device=str(ctx.device))
    flat = {side: _flat_bench(raw[side]) for side in ("teacher", "student")}
    t, s = flat["teacher"], flat["student"]
    flat["ratios"] = {k: (t[k] / s[k] if s[k] else None) for k in
                      ("parameters", "disk_bytes", "latency_ms_p50", "latency_ms_p95", "peak_memory_bytes")}
    flat["ratios"]["texts_per_s"] = s["texts_per_s"] / t["texts_per_s"] if t["texts_per_s"] else None
    flat.update(device=raw["device"], threads=raw["threads"], n_texts=raw["n_texts"])
    return flat


def _flat_bench(side: dict) -> dict:
    return {"parameters": side["parameters"], "disk_bytes": side["disk_bytes"],
            "latency_ms_p50": side["latency"]["p50_ms"], "latency_ms_p95": side["latency"]["p95_ms"],
            "texts_per_s": side["throughput"]["texts_per_s"], "peak_memory_bytes": side["memory_bytes"]}
