"""Efficiency: size on disk, parameters, latency, throughput and peak memory; teacher vs student.

Everything is timed through one interface, a *predictor*: `predict(texts: list[str]) -> logits`
(numpy [len(texts), num_labels]). `torch_predictor` makes one from a model and its tokenizer; an
ONNX Runtime session wrapped the same way is timed by the same code, tokenization included.
Results are plain dicts of numbers, ready for JSON.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from afrocomet.errors import AfroCometError
from afrocomet.evaluate import encode_batch

Predictor = Callable[[list[str]], Any]


def torch_predictor(model: torch.nn.Module, tokenizer, max_length: int = 128, device: str | torch.device = "cpu") -> Predictor:
    """A predictor running `model` (moved to `device`, put in eval mode) under inference mode.

    Returning logits on the CPU as numpy waits for the device, so a CUDA call is fully timed.
    """
    model.to(device).eval()

    def predict(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            batch = encode_batch(tokenizer, texts, max_length, device)
            return model(**batch).logits.float().cpu().numpy()  # [B, num_labels]

    return predict


# ---------------------------------------------------------------------------------------------
# Size
# ---------------------------------------------------------------------------------------------

_FORMATS = (("safetensors", (".safetensors",)), ("pytorch", (".bin", ".pt", ".pth")), ("onnx", (".onnx",)))


def _count_file(path: Path, fmt: str) -> tuple[int, int]:
    """(tensor elements, bytes on disk) of one weight file, external ONNX data included."""
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()), path.stat().st_size
    if fmt == "pytorch":
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        return sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor)), path.stat().st_size
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    parameters = sum(int(np.prod(t.dims)) for t in graph.initializer)
    external = {e.value for t in graph.initializer for e in t.external_data if e.key == "location"}
    return parameters, path.stat().st_size + sum((path.parent / name).stat().st_size for name in external)


def _size_of_path(path: Path) -> dict[str, int]:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for fmt, suffixes in _FORMATS:  # the first format present is the one counted
        chosen = [p for p in files if p.name.endswith(suffixes)]
        if chosen:
            counts = [_count_file(p, fmt) for p in chosen]
            return {"parameters": sum(c[0] for c in counts), "disk_bytes": sum(c[1] for c in counts)}
    raise AfroCometError("no weight file (*.safetensors, *.bin, *.pt, *.onnx) found", path=path)


def model_size(model: torch.nn.Module | str | Path) -> dict[str, int]:
    """Parameters and bytes on disk of a model, a saved model folder or a weight file.

    A module is saved with safetensors to a temporary file (shared tensors once) and measured.
    A folder counts the files of one format only (safetensors, else PyTorch, else ONNX).
    """
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise AfroCometError("model path does not exist", path=path)
        return _size_of_path(path)
    from safetensors.torch import save_model

    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "model.safetensors"
        try:
            save_model(model, str(file))
        except (ValueError, TypeError, RuntimeError):  # e.g. packed int8 weights: not plain tensors
            file = Path(tmp) / "model.pt"
            torch.save(model.state_dict(), file)
        return {"parameters": parameters, "disk_bytes": file.stat().st_size}


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the model's parameters and buffers in memory (shared tensors once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


# ---------------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AfroCometError(f"{field} not found", path="/proc/self/status")


def _release_free_memory() -> None:
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
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
    except OSError as exc:
        raise AfroCometError(f"CPU peak memory needs Linux's /proc/self/clear_refs ({exc.strerror or exc})",
                             path="/proc/self/clear_refs") from exc
    before = _proc_status_kib("VmRSS")
    fn()
    return max(0, _proc_status_kib("VmHWM") - before) * 1024


# ---------------------------------------------------------------------------------------------
# Teacher vs student
# ---------------------------------------------------------------------------------------------


def benchmark(predict: Predictor, texts: Sequence[str], *, latency_batch_size: int = 1, throughput_batch_size: int = 32,
              warmup: int = 5, repeats: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Latency, throughput and the activation memory of the longest batch for one predictor."""
    longest = sorted(texts, key=len, reverse=True)[:throughput_batch_size]
    return {
        "latency": measure_latency(predict, texts, batch_size=latency_batch_size, warmup=warmup, repeats=repeats),
        "throughput": measure_throughput(predict, texts, batch_size=throughput_batch_size),
        "activation_peak_bytes": peak_memory(lambda: predict(longest), device),
    }


def benchmark_model(model: torch.nn.Module, tokenizer, texts: Sequence[str], *, max_length: int = 128,
                    device: str = "cpu", **kwargs) -> dict[str, Any]:
    """`benchmark` of a PyTorch model plus its size; memory = weights + activation peak."""
    result = benchmark(torch_predictor(model, tokenizer, max_length, device), texts, device=device, **kwargs)
    result.update(model_size(model))
    result["weights_bytes"] = weights_bytes(model)
    result["memory_bytes"] = result["weights_bytes"] + result["activation_peak_bytes"]
    return result


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def ratios(teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, float | None]:
    """How many times smaller/faster the student is (teacher/student; student/teacher throughput)."""
    return {
        "latency": _ratio(teacher["latency"]["p50_ms"], student["latency"]["p50_ms"]),
        "latency_p95": _ratio(teacher["latency"]["p95_ms"], student["latency"]["p95_ms"]),
        "parameters": _ratio(teacher["parameters"], student["parameters"]),
        "disk_bytes": _ratio(teacher["disk_bytes"], student["disk_bytes"]),
        "memory_bytes": _ratio(teacher["memory_bytes"], student["memory_bytes"]),
        "throughput": _ratio(student["throughput"]["texts_per_s"], teacher["throughput"]["texts_per_s"]),
    }


def compare(teacher_model: torch.nn.Module, student_model: torch.nn.Module, tokenizer_t, tokenizer_s,
            texts: Sequence[str], *, threads: int | None = None, max_length: int = 128, device: str = "cpu",
            **kwargs) -> dict[str, Any]:
    """Benchmark teacher and student on the same texts and settings; `ratios` summarises.

    `threads` fixes torch's CPU thread count for the run (restored afterwards); keyword
    arguments go to `benchmark` (batch sizes, warmup, repeats).
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        teacher = benchmark_model(teacher_model, tokenizer_t, texts, max_length=max_length, device=device, **kwargs)
        student = benchmark_model(student_model, tokenizer_s, texts, max_length=max_length, device=device, **kwargs)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    return {"teacher": teacher, "student": student, "ratios": ratios(teacher, student),
            "device": str(device), "threads": used_threads, "max_length": max_length, "n_texts": len(texts)}
