"""The efficiency schema: one model's measures, and teacher vs student, as `afrocomet bench --json`
and the run's `results.json` (`efficiency`) both write them.

A *column* (one model, `benchmark_model` / `benchmark_onnx`)::

    parameters, disk_bytes          model_size: tensor elements, bytes of the weight files
    non_embedding_parameters        size.non_embedding_parameters (None for ONNX): depth and width
    weights_bytes                   parameters and buffers in memory (None for ONNX)
    activation_peak_bytes           peak_memory of predicting the longest batch
    memory_bytes                    weights_bytes + activation_peak_bytes (ONNX: peak of opening + one batch)
    latency: {p50_ms, p95_ms, mean_ms, n, batch_size, threads}       best_latency, batch 1 (PyTorch on the
                                    CPU: at the free cores and at one thread, the lower p50 and its count)
    throughput: {texts_per_s, seconds, n, batch_size, threads}       measure_throughput

`afrocomet bench` adds model, backend, device, max_length and tokens to each column.
*Ratios* (`ratios`): how many times better the second column is than the reference, keyed by
the measures of `MEASURES`: latency (p50), latency_p95, parameters, non_embedding_parameters,
disk_bytes, memory_bytes
(reference / column) and throughput (column / reference); None where undefined.
`compare` (the run's `efficiency` block) is {teacher: column, student: column, ratios, latency_interleaved,
device, threads, max_length, n_texts, load}; `latency_interleaved` (`interleaved_pair`): {rounds, per_round,
teacher_p50_ms, student_p50_ms (one per round), ratio_median, threads: {teacher, student}}; `load` (also in bench's JSON) is afrocomet.device.machine_load:
{threads, cores, busy_cores_before, busy_cores_after, busy}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from afrocomet.bench.memory import peak_memory
from afrocomet.bench.size import model_size, non_embedding_parameters, weights_bytes
from afrocomet.bench.timing import (Predictor, as_teacher_student, interleaved_latency, measure_latency,
                                    measure_throughput, torch_predictor)
from afrocomet.device import choose_threads, machine_busy, machine_load, torch_threads

# measure -> (its path in a column, whether higher is better); the order of every `ratios` dict
MEASURES: dict[str, tuple[tuple[str, ...], bool]] = {
    "latency": (("latency", "p50_ms"), False),
    "latency_p95": (("latency", "p95_ms"), False),
    "parameters": (("parameters",), False),
    "non_embedding_parameters": (("non_embedding_parameters",), False),
    "disk_bytes": (("disk_bytes",), False),
    "memory_bytes": (("memory_bytes",), False),
    "throughput": (("throughput", "texts_per_s"), True),
}


def benchmark(predict: Predictor, texts: Sequence[str], *, latency_batch_size: int = 1, throughput_batch_size: int = 32,
              warmup: int = 5, repeats: int | None = None, device: str = "cpu",
              latency_threads: Sequence[int] = ()) -> dict[str, Any]:
    """Latency, throughput and the activation memory of the longest batch for one predictor.

    `latency_threads`: torch thread counts to time the latency at besides the current one (a PyTorch
    predictor on the CPU); the lowest p50 is kept, with its count (`latency.threads`)."""
    longest = sorted(texts, key=len, reverse=True)[:throughput_batch_size]
    return {
        "latency": best_latency(predict, texts, latency_threads, batch_size=latency_batch_size, warmup=warmup,
                                repeats=repeats),
        "throughput": measure_throughput(predict, texts, batch_size=throughput_batch_size),
        "activation_peak_bytes": peak_memory(lambda: predict(longest), device),
    }


def best_latency(predict: Predictor, texts: Sequence[str], threads: Sequence[int] = (), **kwargs) -> dict[str, Any]:
    """`measure_latency` at the current torch thread count and at each of `threads`: the one with the
    lowest p50. A small model at batch 1 is often fastest on one thread (waking a pool costs more than
    its matrix products gain), a large one on all free cores: each model is timed at its own best
    count, as a deployment would run it, and `latency.threads` says which."""
    results = [measure_latency(predict, texts, **kwargs)]
    for count in sorted(set(threads) - {torch.get_num_threads()}):
        with torch_threads(count):
            results.append(measure_latency(predict, texts, **kwargs))
    return min(results, key=lambda r: r["p50_ms"])


def benchmark_model(model: torch.nn.Module, tokenizer, texts: Sequence[str], *, max_length: int = 128,
                    device: str = "cpu", compile: bool = False, **kwargs) -> dict[str, Any]:
    """`benchmark` of a PyTorch model plus its size; memory = weights + activation peak."""
    predict = torch_predictor(model, tokenizer, max_length, device, compile=compile)
    if str(device).startswith("cpu"):  # and one thread: each model's batch-1 latency at its best count
        kwargs.setdefault("latency_threads", (1,))
    result = benchmark(predict, texts, device=device, **kwargs)
    result.update(model_size(model))
    result["non_embedding_parameters"] = non_embedding_parameters(model)
    result["weights_bytes"] = weights_bytes(model)
    result["memory_bytes"] = result["weights_bytes"] + result["activation_peak_bytes"]
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def value(column: Mapping[str, Any], measure: str) -> Any:
    """A measure's value in a column (`latency` -> column["latency"]["p50_ms"]); None where absent."""
    out: Any = column
    for key in MEASURES[measure][0]:
        out = out.get(key) if isinstance(out, Mapping) else None
    return out


def ratios(teacher: Mapping[str, Any], student: Mapping[str, Any]) -> dict[str, float | None]:
    """How many times smaller/faster the student is (teacher/student; student/teacher throughput)."""
    out = {}
    for measure, (_, higher_is_better) in MEASURES.items():
        t, s = value(teacher, measure), value(student, measure)
        out[measure] = _ratio(s, t) if higher_is_better else _ratio(t, s)
    return out


def latency_ratio(eff: Mapping[str, Any]) -> tuple[float | None, str]:
    """How many times lower the student's batch-1 p50 is than the teacher's, as a run states it, and how
    it was measured: the median over interleaved rounds where `eff` (a `compare` result) has them, else
    the ratio of the two columns, timed one after the other."""
    inter = eff.get("latency_interleaved") or {}
    if isinstance(inter.get("ratio_median"), (int, float)):
        return float(inter["ratio_median"]), "interleaved rounds"
    given = (eff.get("ratios") or {}).get("latency")
    return (float(given) if isinstance(given, (int, float)) else None), "one after the other"


def compare(teacher_model: torch.nn.Module, student_model: torch.nn.Module, tokenizer_t, tokenizer_s,
            texts: Sequence[str], *, threads: int | None = None, max_length: int = 128, device: str = "cpu",
            **kwargs) -> dict[str, Any]:
    """Benchmark teacher and student on the same texts and settings; `ratios` summarises.

    `threads` fixes torch's CPU thread count for the run (restored afterwards; None: chosen from the
    free cores, afrocomet.device.choose_threads); `load` records the machine's load before and after
    (a warning when busy). Keyword arguments go to `benchmark` (batch sizes, warmup, repeats).
    """
    before = machine_busy()
    with torch_threads(choose_threads(threads)) as used_threads:
        teacher = benchmark_model(teacher_model, tokenizer_t, texts, max_length=max_length, device=device, **kwargs)
        student = benchmark_model(student_model, tokenizer_s, texts, max_length=max_length, device=device, **kwargs)
        interleaved = interleaved_pair(teacher_model, student_model, tokenizer_t, tokenizer_s, texts, teacher, student,
                                       max_length=max_length, device=device)
    return {"teacher": teacher, "student": student, "ratios": ratios(teacher, student),
            "latency_interleaved": interleaved,
            "device": str(device), "threads": used_threads, "max_length": max_length, "n_texts": len(texts),
            "load": machine_load(before, used_threads)}


def interleaved_pair(teacher_model: torch.nn.Module, student_model: torch.nn.Module, tokenizer_t, tokenizer_s,
                     texts: Sequence[str], teacher: Mapping[str, Any], student: Mapping[str, Any], *,
                     max_length: int, device: str) -> dict[str, Any]:
    """Teacher and student timed again at batch 1 in alternating rounds (`interleaved_latency`), each at
    the thread count its column's latency chose: the two columns are timed one after the other, so a
    load that comes and goes between them biases their ratio; `ratio_median` (the median over rounds of
    the teacher's p50 / the student's) does not."""
    counts = tuple(value.get("latency", {}).get("threads") for value in (teacher, student))
    result = interleaved_latency(torch_predictor(teacher_model, tokenizer_t, max_length, device),
                                 torch_predictor(student_model, tokenizer_s, max_length, device), texts,
                                 threads=counts if str(device).startswith("cpu") else (None, None))
    return {**as_teacher_student(result), "threads": {"teacher": counts[0], "student": counts[1]}}


def benchmark_onnx(folder: str | Path, onnx_file: str, texts: Sequence[str], *, threads: int | None = None,
                   max_length: int = 128, **kwargs) -> dict[str, Any]:
    """`benchmark` of one ONNX file of an exported folder (ONNX Runtime, CPU) plus its size.

    ONNX Runtime's memory is not torch tensors, so `memory_bytes` is the peak of opening the session
    (weights, arena) and running the longest batch, measured the same way as `peak_memory`.
    """
    from afrocomet.predict import load_onnx

    batch = kwargs.get("throughput_batch_size", 32)
    longest = sorted(texts, key=len, reverse=True)[:batch]
    opened: list = []

    def open_and_run() -> None:
        model, tokenizer, _ = load_onnx(folder, onnx_file, threads=threads)
        opened.append((model, tokenizer))
        torch_predictor(model, tokenizer, max_length)(longest)

    open_and_run()  # once untimed: ONNX Runtime's one-time set-up is not this file's memory
    opened.clear()
    memory = peak_memory(open_and_run)
    model, tokenizer = opened[0]
    result = benchmark(torch_predictor(model, tokenizer, max_length), texts, **kwargs)
    result.update(model_size(Path(folder) / onnx_file))
    result.update(memory_bytes=memory, weights_bytes=None, non_embedding_parameters=None)
    return result


def compare_columns(columns: dict[str, dict[str, Any]], reference: str = "teacher") -> dict[str, dict]:
    """`ratios` of the reference column against every other column (how many times smaller/faster)."""
    return {name: ratios(columns[reference], col) for name, col in columns.items() if name != reference}
