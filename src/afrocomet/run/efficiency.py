"""Efficiency of the run's systems: teacher vs student on real test tweets (results.json `efficiency`)."""

from __future__ import annotations

from torch import nn

from afrocomet.run.context import Context


def measure_efficiency(ctx: Context, teacher: nn.Module, student: nn.Module, n_texts: int = 200) -> dict:
    """Teacher vs student on real test tweets, side by side in this process: `afrocomet.bench.compare`'s
    result as it is (the schema in afrocomet.bench.efficiency)."""
    from afrocomet.bench import bench_texts, compare

    texts = bench_texts(ctx.data.datasets, n_texts, seed=ctx.config.seed)
    return compare(teacher, student, ctx.data.tokenizer, ctx.data.tokenizer, texts, threads=ctx.config.threads,
                   max_length=ctx.config.data.max_length, device=str(ctx.device))  # threads None: the free cores
