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


def torch_predictor(model: torch.nn.Module, tokenizer, max_length: int = 128, device: str | torch.device = "cpu",
                    compile: bool = False) -> Predictor:
    """A predictor running `model` (moved to `device`, put in eval mode) under inference mode.

    Returning logits on the CPU as numpy waits for the device, so a CUDA call is fully timed.
    With `compile`, the model runs through `torch.compile` (still fp32): the first call of each new
    batch size compiles (tens of seconds; on the CPU it needs a C++ compiler), later calls reuse it.
    """
    model.to(device).eval()
    forward = compiled(model) if compile else model

    def predict(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            batch = encode_batch(tokenizer, texts, max_length, device)
            return forward(**batch).logits.float().cpu().numpy()  # [B, num_labels]

    return predict


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
                    device: str = "cpu", compile: bool = False, **kwargs) -> dict[str, Any]:
    """`benchmark` of a PyTorch model plus its size; memory = weights + activation peak."""
    predict = torch_predictor(model, tokenizer, max_length, device, compile=compile)
    result = benchmark(predict, texts, device=device, **kwargs)
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


# ---------------------------------------------------------------------------------------------
# ONNX columns and several models side by side
# ---------------------------------------------------------------------------------------------


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
    result.update(memory_bytes=memory, weights_bytes=None)
    return result


def compare_columns(columns: dict[str, dict[str, Any]], reference: str = "teacher") -> dict[str, dict]:
    """`ratios` of the reference column against every other column (how many times smaller/faster)."""
    return {name: ratios(columns[reference], col) for name, col in columns.items() if name != reference}


def random_weights_model(preset: str, task: str = "classification", *, vocab_size: int | None = None,
                         seed: int = 0) -> torch.nn.Module:
    """A preset model with random weights, made quickly (same shapes, memory and cost as a trained one).

    HF's initialisation of the 560M-parameter teacher takes ~15 s on 2 cores; here each matrix is a
    random N(0, 0.02) block of up to 256 rows tiled over its rows, layer norms 1, biases 0.
    """
    import math

    from transformers.initialization import no_init_weights

    from afrocomet.models.build import TASKS
    from afrocomet.models.presets import get_preset

    config = get_preset(preset).to_config(vocab_size=vocab_size)
    with no_init_weights():
        model = TASKS[task].from_config(config, attn_implementation="sdpa")
    model.tie_weights()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                block = torch.randn(min(p.shape[0], 256), *p.shape[1:], generator=g) * 0.02
                p.copy_(block.repeat(math.ceil(p.shape[0] / block.shape[0]), *[1] * (p.dim() - 1))[: p.shape[0]])
            elif name.endswith("LayerNorm.weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return model.eval()


# ---------------------------------------------------------------------------------------------
# `afrocomet bench`: presets or saved folders, on real tweets, side by side in one run
# ---------------------------------------------------------------------------------------------

TOKENIZER_TEXTS = 10_000  # train tweets the presets' shared tokenizer is trained on (evenly spaced)
TOKENIZER_VOCAB = 8_000


def bench_texts(datasets: dict, n_texts: int, seed: int = 0) -> list[str]:
    """`n_texts` test tweets drawn at random (seeded) from the languages' test splits, in that order."""
    texts = [t for ds in datasets.values() for t in ds.texts("test")]
    if n_texts < 1:
        raise AfroCometError(f"the number of texts must be at least 1, got {n_texts}")
    return [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))[:n_texts]]


def shared_tokenizer(specs: Sequence[str], datasets: dict) -> tuple[Any, str]:
    """The presets' tokenizer: a given folder's own when it fits every preset's vocabulary, else one
    trained on AfriSenti train tweets (at most `TOKENIZER_TEXTS`) with ids below every preset's vocabulary."""
    from afrocomet.models.presets import get_preset, is_preset
    from afrocomet.tokenizer import load_tokenizer, train_tokenizer

    vocab = min(get_preset(s).vocab_size for s in specs if is_preset(s))
    for spec in specs:
        if not is_preset(spec) and spec:
            tokenizer = load_tokenizer(spec)
            if len(tokenizer) <= vocab:
                return tokenizer, f"{len(tokenizer):,}-piece tokenizer of {spec}"
    train = [t for ds in datasets.values() for t in ds.texts("train")]
    keep = np.linspace(0, len(train) - 1, min(len(train), TOKENIZER_TEXTS)).round().astype(int)
    tokenizer = train_tokenizer([train[i] for i in keep], vocab_size=min(TOKENIZER_VOCAB, vocab))
    return tokenizer, (f"{len(tokenizer):,}-piece unigram tokenizer trained here on {len(keep):,} AfriSenti "
                       f"train tweets ({', '.join(datasets)})")


def _open_torch(spec: str, shared: Any, seed: int) -> tuple[torch.nn.Module, Any, str]:
    """(model, tokenizer, description) for a preset (random weights) or a saved PyTorch folder."""
    from afrocomet.models.presets import is_preset
    from afrocomet.predict import load_classifier

    if is_preset(spec):
        return random_weights_model(spec, seed=seed), shared, f"preset {spec} (random weights)"
    model, tokenizer, _ = load_classifier(spec)
    return model, tokenizer, f"folder {spec}"


def _tokens(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, float]:
    lengths = [min(len(ids), max_length) for ids in tokenizer(list(texts))["input_ids"]]
    return {"mean": float(np.mean(lengths)), "p50": float(np.median(lengths)), "max": int(max(lengths))}


def _limit(model: torch.nn.Module, max_length: int) -> int:
    from afrocomet.predict import default_max_length

    return min(max_length, default_max_length(model.config))


def _check_spec(spec: str, what: str) -> None:
    from afrocomet.models.presets import PRESETS, is_preset
    from afrocomet.predict import is_onnx_folder

    if not is_preset(spec) and not Path(spec).expanduser().is_dir():
        raise AfroCometError(f"--{what} {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a model folder")
    if not is_preset(spec) and is_onnx_folder(spec):
        raise AfroCometError(f"an ONNX folder: pass it as --onnx (--{what} is a preset or a PyTorch folder)", path=spec)


def onnx_columns(folder: str | Path) -> list[tuple[str, str]]:
    """(column name, file) for an exported folder: onnx-fp32, and onnx-int8 when model.int8.onnx is there."""
    from afrocomet.onnx_model import INT8_FILE, ONNX_FILE

    folder = Path(folder).expanduser()
    if not (folder / ONNX_FILE).is_file():
        raise AfroCometError(f"not an ONNX folder: no {ONNX_FILE} (write one with afrocomet export --onnx)", path=folder)
    return [("onnx-fp32", ONNX_FILE)] + ([("onnx-int8", INT8_FILE)] if (folder / INT8_FILE).is_file() else [])


def _torch_column(spec: str, seed: int, shared: Any, texts: Sequence[str], device: torch.device, max_length: int,
                  compile: bool = False, **kwargs) -> dict[str, Any]:
    model, tokenizer, description = _open_torch(spec, shared, seed)
    limit = _limit(model, max_length)
    column = benchmark_model(model, tokenizer, texts, max_length=limit, device=str(device), compile=compile, **kwargs)
    column.update(model=description, backend="pytorch fp32" + (" compiled" if compile else ""), device=str(device),
                  max_length=limit, tokens=_tokens(tokenizer, texts, limit))
    del model
    _release_free_memory()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return column


def _onnx_column(folder: str | Path, onnx_file: str, texts: Sequence[str], max_length: int, **kwargs) -> dict[str, Any]:
    from transformers import AutoConfig

    from afrocomet.predict import default_max_length
    from afrocomet.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(folder)
    limit = min(max_length, default_max_length(AutoConfig.from_pretrained(str(folder), trust_remote_code=False)))
    column = benchmark_onnx(folder, onnx_file, texts, threads=torch.get_num_threads(), max_length=limit, **kwargs)
    precision = {"model.onnx": "fp32", "model.int8.onnx": "int8"}.get(onnx_file, onnx_file)
    column.update(model=f"folder {folder}/{onnx_file}", backend=f"onnxruntime {precision}",
                  device="cpu", max_length=limit, tokens=_tokens(tokenizer, texts, limit))
    _release_free_memory()
    return column


def run_bench(teacher: str, student: str, onnx: str | Path | None = None, *, languages=None,
              data_dir: str | Path | None = None, n_texts: int = 200, device: str = "auto",
              threads: int | None = None, max_length: int = 128, warmup: int = 5,
              throughput_batch_size: int = 32, download: bool = True, compile: bool = False) -> dict[str, Any]:
    """Teacher, student (presets with random weights, or saved folders) and an exported ONNX folder,
    measured one after the other in this process on the same real AfriSenti test tweets.

    Columns: size, latency p50/p95 at batch 1, throughput at `throughput_batch_size`, peak memory;
    `ratios[column]` = how many times smaller/faster than the teacher. ONNX columns run on the CPU.
    With `compile`, two more columns run the same two models through `torch.compile`
    (`teacher-compiled`, `student-compiled`); `ratios_compiled` compares those two with each other.
    """
    from afrocomet.data.afrisenti import load_afrisenti
    from afrocomet.data.schema import DEFAULT_LANGUAGES
    from afrocomet.device import resolve_device
    from afrocomet.models.presets import is_preset

    _check_spec(teacher, "teacher")
    _check_spec(student, "student")
    extra = onnx_columns(onnx) if onnx is not None else []
    if max_length < 2 or threads is not None and threads < 1:
        raise AfroCometError(f"max_length must be >= 2 and threads >= 1, got {max_length} and {threads}")
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise AfroCometError(f"unknown device {device!r}: {exc}") from exc
    presets = [s for s in (teacher, student) if is_preset(s)]
    datasets = load_afrisenti(languages or DEFAULT_LANGUAGES, data_dir, download=download,
                              splits=("train", "test") if presets else ("test",))
    texts = bench_texts(datasets, n_texts)
    shared, tokenizer_note = (shared_tokenizer([teacher, student, str(onnx or "")], datasets) if presets
                              else (None, "each folder's own tokenizer"))
    kwargs = dict(warmup=min(warmup, len(texts)), throughput_batch_size=throughput_batch_size)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads or old_threads)
    try:
        columns = {"teacher": _torch_column(teacher, 0, shared, texts, dev, max_length, **kwargs),
                   "student": _torch_column(student, 1, shared, texts, dev, max_length, **kwargs)}
        if compile:
            columns["teacher-compiled"] = _torch_column(teacher, 0, shared, texts, dev, max_length, True, **kwargs)
            columns["student-compiled"] = _torch_column(student, 1, shared, texts, dev, max_length, True, **kwargs)
        for name, file in extra:
            columns[name] = _onnx_column(onnx, file, texts, max_length, **kwargs)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    return {"texts": {"source": f"AfriSenti test ({', '.join(datasets)}), {len(texts)} tweets drawn with seed 0",
                      "n": len(texts)},
            "tokenizer": tokenizer_note + ("" if not presets else " (for the presets)"), "device": str(dev),
            "threads": used_threads, "columns": columns, "ratios": compare_columns(columns),
            **({"ratios_compiled": ratios(columns["teacher-compiled"], columns["student-compiled"])} if compile else {})}


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def _times(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}x"


def bench_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of `run_bench`'s result as a table: one column per model, then the ratios
    teacher / column (throughput: column / teacher), so that every ratio reads "x times better"."""
    cols = result["columns"]
    batch = next(iter(cols.values()))["throughput"]["batch_size"]
    metrics = [
        ("backend", lambda c: f"{c['backend']} {c['device']}"),
        ("parameters", lambda c: f"{c['parameters']:,}"),
        ("disk MiB", lambda c: _mb(c["disk_bytes"])),
        ("tokens/text", lambda c: f"{c['tokens']['mean']:.1f}"),
        ("p50 ms, batch 1", lambda c: f"{c['latency']['p50_ms']:.2f}"),
        ("p95 ms, batch 1", lambda c: f"{c['latency']['p95_ms']:.2f}"),
        (f"texts/s, batch {batch}", lambda c: f"{c['throughput']['texts_per_s']:,.1f}"),
        ("peak memory MiB", lambda c: _mb(c["memory_bytes"])),
    ]
    rows = [[name, *(fn(c) for c in cols.values())] for name, fn in metrics]
    for key, label in (("latency", "x faster p50"), ("latency_p95", "x faster p95"), ("parameters", "x fewer params"),
                       ("disk_bytes", "x smaller disk"), ("memory_bytes", "x less memory"),
                       ("throughput", "x throughput")):
        rows.append([label, "1.0x", *(_times(result["ratios"][name][key]) for name in list(cols)[1:])])
    return ["metric", *cols], rows
