"""Speed through one interface, a *predictor*: `predict(texts: list[str]) -> logits`.

`torch_predictor` makes one from a model and its tokenizer; an ONNX Runtime session wrapped the
same way is timed by the same code, tokenization included.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from afrocomet.device import torch_threads
from afrocomet.errors import AfroCometError
from afrocomet.inference import text_predictor

Predictor = Callable[[list[str]], Any]


def torch_predictor(model: torch.nn.Module, tokenizer, max_length: int = 128, device: str | torch.device = "cpu",
                    compile: bool = False) -> Predictor:
    """A predictor running `model` (moved to `device`, put in eval mode) under inference mode.

    One call is one batch, tokenized as given (`afrocomet.inference.text_predictor`). Returning
    logits on the CPU as numpy waits for the device, so a CUDA call is fully timed.
    With `compile`, the model runs through `torch.compile` (still fp32): the first call of each new
    batch size compiles (tens of seconds; on the CPU it needs a C++ compiler), later calls reuse it.
    """
    return text_predictor(model, tokenizer, max_length=max_length, device=device,
                          forward=compiled(model) if compile else None)


def compiled(model: torch.nn.Module) -> Callable[..., Any]:
    """`torch.compile(model, dynamic=True)` (one graph for every sequence length); a failure to
    compile (no C++ compiler, an unsupported model) becomes one clear AfroCometError."""
    fn = torch.compile(model, dynamic=True)
    done = False

    def call(**inputs):
        nonlocal done
        if done:
            return fn(**inputs)
        try:
            out = fn(**inputs)
        except Exception as exc:  # dynamo/inductor raise many types; the first call is where they surface
            raise AfroCometError(f"torch.compile failed for {type(model).__name__} ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); on the CPU it needs a C++ "
                                 "compiler (g++); run without --compile") from exc
        done = True
        return out

    return call


def _batches(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    if not texts:
        raise AfroCometError("no texts to benchmark with")
    if batch_size < 1:
        raise AfroCometError(f"batch_size must be >= 1, got {batch_size}")
    return [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]


def measure_latency(
    predict: Predictor, texts: Sequence[str], *, batch_size: int = 1, warmup: int = 5, repeats: int | None = None
) -> dict[str, Any]:
    """Time `repeats` calls of `predict` on consecutive batches of the given texts (cycling).

    The texts are used in their order, so real tweet lengths are timed. `repeats` defaults to
    one pass over the texts; the first `warmup` calls are not timed.
    """
    batches = _batches(texts, batch_size)
    repeats = len(batches) if repeats is None else repeats
    if repeats < 1:
        raise AfroCometError(f"repeats must be >= 1, got {repeats}")
    for i in range(warmup):
        predict(batches[i % len(batches)])
    times_ms = []
    for i in range(repeats):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        predict(batch)
        times_ms.append((time.perf_counter() - start) * 1000.0)
    return {
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p95_ms": float(np.percentile(times_ms, 95)),
        "mean_ms": float(np.mean(times_ms)),
        "n": repeats,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
    }


def measure_throughput(
    predict: Predictor, texts: Sequence[str], *, batch_size: int = 32, sort_by_length: bool = True
) -> dict[str, Any]:
    """Texts per second over one pass of all texts in batches (one untimed warm-up batch first).

    With `sort_by_length` (longest first, by characters) batches hold similar lengths, as in
    batch inference; the order does not depend on the tokenizer, so every predictor sees the same.
    """
    ordered = sorted(texts, key=len, reverse=True) if sort_by_length else list(texts)
    batches = _batches(ordered, batch_size)
    predict(batches[0])
    start = time.perf_counter()
    for batch in batches:
        predict(batch)
    seconds = time.perf_counter() - start
    return {
        "texts_per_s": len(ordered) / seconds,
        "seconds": seconds,
        "n": len(ordered),
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
    }


def interleaved_latency(first: Predictor, second: Predictor, texts: Sequence[str], *, rounds: int = 7,
                        per_round: int = 20, warmup: int = 3,
                        threads: tuple[int | None, int | None] = (None, None)) -> dict[str, Any]:
    """Batch-1 latency of two predictors in interleaved rounds (first, second; then second, first; ...),
    so that a load that comes and goes during the measurement hits both alike. Each round times
    `per_round` calls of each on the same texts; `ratio_median` is the median over rounds of
    (first's p50 / second's p50): how many times faster `second` is, robust to a busy round.
    `threads`: torch's thread count for each predictor's calls (None: as it is), e.g. each model's
    faster count from `best_latency`."""
    batches = _batches(texts, 1)
    runs = {"first": (first, threads[0]), "second": (second, threads[1])}
    for name, (predict, count) in runs.items():
        with torch_threads(count):
            for i in range(warmup):
                predict(batches[i % len(batches)])
    p50 = {"first": [], "second": []}
    for r in range(rounds):
        chunk = [batches[(r * per_round + i) % len(batches)] for i in range(per_round)]
        for name in ("first", "second") if r % 2 == 0 else ("second", "first"):
            predict, count = runs[name]
            times = []
            with torch_threads(count):
                for batch in chunk:
                    start = time.perf_counter()
                    predict(batch)
                    times.append((time.perf_counter() - start) * 1000.0)
            p50[name].append(float(np.percentile(times, 50)))
    per_round_ratio = [a / b for a, b in zip(p50["first"], p50["second"]) if b > 0]
    return {"rounds": rounds, "per_round": per_round, "first_p50_ms": p50["first"], "second_p50_ms": p50["second"],
            "ratio_median": float(np.median(per_round_ratio)) if per_round_ratio else None,
            "threads": torch.get_num_threads()}


def as_teacher_student(result: dict[str, Any]) -> dict[str, Any]:
    """An `interleaved_latency` result of (teacher, student) under the names bench's JSON and the run's
    efficiency block use: teacher_p50_ms, student_p50_ms, ratio_median (and rounds, per_round)."""
    return {"rounds": result["rounds"], "per_round": result["per_round"], "teacher_p50_ms": result["first_p50_ms"],
            "student_p50_ms": result["second_p50_ms"], "ratio_median": result["ratio_median"]}


def latency(model, tokenizer, texts: Sequence[str], *, batch_size: int = 1, warmup: int = 5,
            repeats: int | None = None, max_length: int = 128, device: str = "cpu") -> dict[str, Any]:
    """`measure_latency` of a PyTorch model with its tokenizer."""
    predict = torch_predictor(model, tokenizer, max_length, device)
    return measure_latency(predict, texts, batch_size=batch_size, warmup=warmup, repeats=repeats)


def throughput(model, tokenizer, texts: Sequence[str], *, batch_size: int = 32, max_length: int = 128,
               device: str = "cpu", sort_by_length: bool = True) -> dict[str, Any]:
    """`measure_throughput` of a PyTorch model with its tokenizer."""
    predict = torch_predictor(model, tokenizer, max_length, device)
    return measure_throughput(predict, texts, batch_size=batch_size, sort_by_length=sort_by_length)
