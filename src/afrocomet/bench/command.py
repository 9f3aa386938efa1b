"""`afrocomet bench`: presets or saved folders, on real tweets, side by side in one run.

Each model is a column of the efficiency schema (`afrocomet.bench.efficiency`) plus model,
backend, device, max_length and tokens; `bench_rows` lays the result out as the command's table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from afrocomet.bench.efficiency import benchmark_model, benchmark_onnx, compare_columns, ratios
from afrocomet.bench.memory import release_free_memory
from afrocomet.bench.timing import as_teacher_student, interleaved_latency, torch_predictor
from afrocomet.device import choose_threads, machine_busy, machine_load, torch_threads
from afrocomet.errors import AfroCometError

TOKENIZER_TEXTS = 10_000  # train tweets the presets' shared tokenizer is trained on (evenly spaced)
TOKENIZER_VOCAB = 8_000


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
    """(column name, file) for an exported folder: onnx-fp32 (model.onnx), then onnx-TAG for each other
    model.TAG.onnx there (onnx-int8 for export's model.int8.onnx; e.g. onnx-int8-dynamic beside it)."""
    from afrocomet.onnx_model import ONNX_FILE

    folder = Path(folder).expanduser()
    if not (folder / ONNX_FILE).is_file():
        raise AfroCometError(f"not an ONNX folder: no {ONNX_FILE} (write one with afrocomet export --onnx)", path=folder)
    others = sorted((p.name for p in folder.glob("model.*.onnx") if p.is_file() and p.name != ONNX_FILE),
                    key=lambda name: (len(name), name))  # model.int8.onnx before model.int8-dynamic.onnx
    return [(f"onnx-{_precision(name)}", name) for name in [ONNX_FILE, *others]]


def _precision(onnx_file: str) -> str:
    """fp32 for model.onnx, TAG for model.TAG.onnx (int8, int8-dynamic, ...)."""
    from afrocomet.onnx_model import ONNX_FILE

    return "fp32" if onnx_file == ONNX_FILE else onnx_file[len("model."):-len(".onnx")]


def _torch_column(spec: str, seed: int, shared: Any, texts: Sequence[str], device: torch.device, max_length: int,
                  compile: bool = False, **kwargs) -> dict[str, Any]:
    model, tokenizer, description = _open_torch(spec, shared, seed)
    limit = _limit(model, max_length)
    column = benchmark_model(model, tokenizer, texts, max_length=limit, device=str(device), compile=compile, **kwargs)
    column.update(model=description, backend="pytorch fp32" + (" compiled" if compile else ""), device=str(device),
                  max_length=limit, tokens=_tokens(tokenizer, texts, limit))
    del model
    release_free_memory()
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
    column.update(model=f"folder {folder}/{onnx_file}", backend=f"onnxruntime {_precision(onnx_file)}",
                  device="cpu", max_length=limit, tokens=_tokens(tokenizer, texts, limit))
    release_free_memory()
    return column


def _interleaved(teacher: str, student: str, shared: Any, texts: Sequence[str], device: torch.device,
                 max_length: int) -> dict[str, Any]:
    """The teacher/student batch-1 latency ratio that holds up on a busy machine: both models open at
    once, timed in alternating rounds, the median of the rounds' ratios (bench.timing.interleaved_latency)."""
    models = [_open_torch(spec, shared, seed) for seed, spec in enumerate((teacher, student))]
    first, second = (torch_predictor(m, tok, _limit(m, max_length), str(device)) for m, tok, _ in models)
    result = interleaved_latency(first, second, texts)
    del models, first, second
    release_free_memory()
    return as_teacher_student(result)


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
    `threads` (None: the free cores, afrocomet.device.choose_threads) and the machine's load before
    and after (`load`; a warning when busy) are recorded. The columns are measured one after the
    other, so a load that comes and goes can bias their ratio: `latency_interleaved` times teacher
    and student again in alternating rounds and gives the median of the rounds' p50 ratios.
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
    dev = resolve_device(device)  # an unknown name is an AfroCometError there
    presets = [s for s in (teacher, student) if is_preset(s)]
    datasets = load_afrisenti(languages or DEFAULT_LANGUAGES, data_dir, download=download,
                              splits=("train", "test") if presets else ("test",))
    texts = bench_texts(datasets, n_texts)
    shared, tokenizer_note = (shared_tokenizer([teacher, student, str(onnx or "")], datasets) if presets
                              else (None, "each folder's own tokenizer"))
    kwargs = dict(warmup=min(warmup, len(texts)), throughput_batch_size=throughput_batch_size)
    before = machine_busy()
    with torch_threads(choose_threads(threads)) as used_threads:
        columns = {"teacher": _torch_column(teacher, 0, shared, texts, dev, max_length, **kwargs),
                   "student": _torch_column(student, 1, shared, texts, dev, max_length, **kwargs)}
        if compile:
            columns["teacher-compiled"] = _torch_column(teacher, 0, shared, texts, dev, max_length, True, **kwargs)
            columns["student-compiled"] = _torch_column(student, 1, shared, texts, dev, max_length, True, **kwargs)
        for name, file in extra:
            columns[name] = _onnx_column(onnx, file, texts, max_length, **kwargs)
        interleaved = _interleaved(teacher, student, shared, texts, dev, max_length)
    return {"texts": {"source": f"AfriSenti test ({', '.join(datasets)}), {len(texts)} tweets drawn with seed 0",
                      "n": len(texts)},
            "tokenizer": tokenizer_note + ("" if not presets else " (for the presets)"), "device": str(dev),
            "threads": used_threads, "load": machine_load(before, used_threads), "latency_interleaved": interleaved,
            "columns": columns, "ratios": compare_columns(columns),
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
        ("non-embedding params", lambda c: "-" if c.get("non_embedding_parameters") is None
         else f"{c['non_embedding_parameters']:,}"),
        ("disk MiB", lambda c: _mb(c["disk_bytes"])),
        ("tokens/text", lambda c: f"{c['tokens']['mean']:.1f}"),
        ("p50 ms, batch 1", lambda c: f"{c['latency']['p50_ms']:.2f}"),
        ("p95 ms, batch 1", lambda c: f"{c['latency']['p95_ms']:.2f}"),
        ("threads, batch 1", lambda c: str(c["latency"].get("threads", "-"))),
        (f"texts/s, batch {batch}", lambda c: f"{c['throughput']['texts_per_s']:,.1f}"),
        ("peak memory MiB", lambda c: _mb(c["memory_bytes"])),
    ]
    rows = [[name, *(fn(c) for c in cols.values())] for name, fn in metrics]
    for key, label in (("latency", "x faster p50"), ("latency_p95", "x faster p95"), ("parameters", "x fewer params"),
                       ("non_embedding_parameters", "x fewer non-embedding params"),
                       ("disk_bytes", "x smaller disk"), ("memory_bytes", "x less memory"),
                       ("throughput", "x throughput")):
        rows.append([label, "1.0x", *(_times(result["ratios"][name][key]) for name in list(cols)[1:])])
    inter = result.get("latency_interleaved")
    if inter:
        rows.append([f"x faster p50, interleaved (median of {inter['rounds']} rounds)", "1.0x",
                     *(_times(inter["ratio_median"]) if name == "student" else "-" for name in list(cols)[1:])])
    return ["metric", *cols], rows


def bench_title(result: dict[str, Any]) -> str:
    """The table's title: device, threads and the machine's load while it ran."""
    load = result.get("load") or {}
    where = f"afrocomet bench: {result['device']}, {result['threads']} threads"
    if load.get("busy_cores_before") is not None:
        where += (f", cores busy with other work {load['busy_cores_before']:.2f} -> {load['busy_cores_after']:.2f} of "
                  f"{load['cores']} cores" + (" (busy: timings unreliable)" if load.get("busy") else ""))
    return where
