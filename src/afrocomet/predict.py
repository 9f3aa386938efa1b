"""Use a saved classifier: label a TSV file (streamed, any size) or score it on AfriSenti.

A model folder is a standard Hugging Face folder (config.json with id2label, model.safetensors,
tokenizer files), as `afrocomet run` writes for DIR/student and DIR/teacher. The folder is opened
as a `Backend`: one function from texts to logits, plus its labels. A folder written by
`afrocomet export` (model.onnx, model.int8.onnx) runs with ONNX Runtime behind the same call.

Input files follow the strict rules of `afrocomet.data.afrisenti` (UTF-8, tab-separated, a header
with `tweet` or `text`, optional `label` and `ID`); errors name the file and line. Output is the
AfriSenti submission format: a header `ID<TAB>label`, then one row per input row, in input order.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Sequence, TextIO

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from afrocomet.data.afrisenti import _header_columns, _missing_file_error, _parse_row, _rows, load_afrisenti, read_tsv
from afrocomet.data.schema import DEFAULT_LANGUAGES, LABELS, Example
from afrocomet.errors import AfroCometError
from afrocomet.evaluate import average_metrics, compute_metrics
from afrocomet.inference import measure_split_cost, predict_logits
from afrocomet.io import atomic_path
from afrocomet.outputs import check_output_file
from afrocomet.quiet import no_progress_bars
from afrocomet.models.build import SAFE_WEIGHTS, check_weights, first_line
from afrocomet.tokenizer import load_tokenizer, model_max_length

CHUNK_ROWS = 2048  # rows read, predicted and written at a time: memory does not grow with the file
MAX_LENGTH_CAP = 512
STDIO = "-"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

Predictor = Callable[[Sequence[str]], tuple[np.ndarray, int]]  # texts -> (logits [n, labels], n truncated)


@dataclass
class Backend:
    """A loaded classifier behind one call, whatever runs it (PyTorch or ONNX Runtime)."""

    predict: Predictor
    labels: tuple[str, ...]  # class id -> label name
    max_length: int
    kind: str  # pytorch | onnx
    split_cost: float | None = None  # token slots (inference.length_batches), where batches are cut by length


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _check_folder(model_dir: str | Path) -> Path:
    """The folder, if it holds config.json, readable safetensors weights and tokenizer files."""
    folder = check_weights(model_dir)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise AfroCometError("model folder has no tokenizer files (tokenizer.json); save the tokenizer "
                             "into it with tokenizer.save_pretrained(folder)", path=folder)
    return folder


def _head_outputs(folder: Path) -> int | None:
    """Rows of the classification head's output layer in model.safetensors (header only), if found."""
    from safetensors import safe_open

    path = folder / "model.safetensors"
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():
                if key.endswith(("classifier.out_proj.weight", "classifier.weight")):
                    return int(weights.get_slice(key).get_shape()[0])
    except (OSError, SafetensorError):
        return None  # check_weights reports unreadable weights
    return None


def _labels(config: PretrainedConfig, folder: Path) -> tuple[str, ...]:
    """id2label from config.json as a tuple in class-id order."""
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = {}  # transformers has read it already; it reports what is wrong with it
    outputs = _head_outputs(folder)
    if isinstance(raw, dict) and "id2label" not in raw and outputs not in (None, len(config.id2label)):
        # transformers would invent LABEL_0, LABEL_1 and report the head's size mismatch in 9 lines
        raise AfroCometError(f'config.json has no id2label (the class names, e.g. {{"0": "negative", "1": "neutral", '
                             f'"2": "positive"}}) and the classification head has {outputs} outputs; add it, or '
                             "save the model with its labels", path=folder)
    if config.architectures and not any(a.endswith("ForSequenceClassification") for a in config.architectures):
        raise AfroCometError(f"config.json describes a {', '.join(config.architectures)}, not a sequence "
                             "classifier; predict needs a model with a classification head", path=folder)
    id2label = {int(i): str(v) for i, v in config.id2label.items()}
    if sorted(id2label) != list(range(len(id2label))) or len(id2label) < 2:
        raise AfroCometError(f"config.json id2label must map class ids 0..n-1 (n >= 2), got {id2label}", path=folder)
    return tuple(id2label[i] for i in range(len(id2label)))


def load_classifier(
    model_dir: str | Path, *, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[int, str]]:
    """(model, tokenizer, id2label) from a saved sequence-classifier folder; safetensors weights only.

    The model is in eval mode on the CPU. Every weight must come from the folder: a checkpoint
    without a classification head (e.g. a masked-LM one) is an error, not a random head.
    """
    folder = _check_folder(model_dir)
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise AfroCometError(f"cannot read config.json: {first_line(exc)}", path=folder) from exc
    labels = _labels(config, folder)
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    if len(tokenizer) > config.vocab_size:
        raise AfroCometError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
                             f"{config.vocab_size} (config.json vocab_size): this tokenizer does not belong "
                             "to this model", path=folder)
    try:
        with no_progress_bars():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(folder), config=config, use_safetensors=True, output_loading_info=True,
                trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise AfroCometError(f"cannot load the model: {first_line(exc)}", path=folder) from exc
    missing = sorted(info["missing_keys"])
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)" if len(missing) > 4 else "")
        raise AfroCometError(f"model.safetensors lacks weights the classifier needs ({shown}); "
                             "it is not a trained sequence classifier", path=folder)
    return model.eval(), tokenizer, dict(enumerate(labels))


def default_max_length(config: PretrainedConfig) -> int:
    """The longest input the model's position table allows (`tokenizer.model_max_length`: XLM-R
    positions - 2, BERT all of them), at most 512."""
    return max(2, min(MAX_LENGTH_CAP, model_max_length(config) or MAX_LENGTH_CAP))


def _pytorch_backend(model: PreTrainedModel, tokenizer, labels: tuple[str, ...], *, batch_size: int,
                     max_length: int, device: str, split_batches: bool = False) -> Backend:
    from afrocomet.device import resolve_device

    dev = resolve_device(device)  # an unknown name is an AfroCometError there
    model.to(dev)
    cost = measure_split_cost(model, dev, width=min(32, max_length)) if split_batches else None

    def predict(texts: Sequence[str]) -> tuple[np.ndarray, int]:
        return predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length, device=dev,
                              split_cost=cost)

    return Backend(predict=predict, labels=labels, max_length=max_length, kind="pytorch", split_cost=cost)


def check_max_length(config: PretrainedConfig, max_length: int | None, model_dir: str | Path) -> int:
    """`max_length`, or the model's limit when None; an error outside 2..limit."""
    limit = default_max_length(config)
    if max_length is None:
        return limit
    if not 2 <= max_length <= limit:
        raise AfroCometError(f"max length must be between 2 and {limit} (the model's position table), got {max_length}",
                             path=model_dir)
    return max_length


def is_onnx_folder(model_dir: str | Path) -> bool:
    """True for a folder that `afrocomet export` wrote: model.onnx and no PyTorch weights."""
    from afrocomet.onnx_model import ONNX_FILE

    folder = Path(model_dir).expanduser()
    return (folder / ONNX_FILE).is_file() and not any((folder / name).is_file() for name in SAFE_WEIGHTS)


def load_onnx(model_dir: str | Path, onnx_file: str | None = None, *, threads: int | None = None,
              device: str = "cpu") -> tuple[torch.nn.Module, PreTrainedTokenizerBase, dict[int, str]]:
    """(OnnxClassifier, tokenizer, id2label) from an ONNX folder; `onnx_file` defaults to model.onnx."""
    from afrocomet.onnx_model import ONNX_FILE, load_onnx_classifier

    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise AfroCometError("model folder not found" if not folder.exists() else "not a folder", path=folder)
    if not (folder / "config.json").is_file():
        raise AfroCometError("ONNX folder has no config.json (export it with afrocomet export)", path=folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise AfroCometError("ONNX folder has no tokenizer files (tokenizer.json)", path=folder)
    name = onnx_file or ONNX_FILE
    if Path(name).name != name:
        raise AfroCometError(f"--onnx-file must be a file name inside the folder, got {name!r}", path=folder)
    model = load_onnx_classifier(folder, name, threads=threads, device=device)
    labels = _labels(model.config, folder)
    tokenizer = load_tokenizer(folder)
    return model, tokenizer, dict(enumerate(labels))


def open_backend(model_dir: str | Path, *, batch_size: int = 64, max_length: int | None = None,
                 device: str = "auto", trust_remote_code: bool = False, onnx_file: str | None = None,
                 split_batches: bool = False) -> Backend:
    """Open a model folder for prediction (the one place that picks how a model runs).

    An ONNX folder (model.onnx, no model.safetensors), or any `onnx_file` (e.g. model.int8.onnx),
    runs with ONNX Runtime; otherwise PyTorch runs the safetensors weights. With `split_batches`
    (the server), each call's texts run in batches cut by length where padding would cost more than
    another forward, at the cost measured here once (`inference.measure_split_cost`).
    """
    if batch_size < 1:
        raise AfroCometError(f"batch size must be at least 1, got {batch_size}")
    if onnx_file is not None or is_onnx_folder(model_dir):
        model, tokenizer, id2label = load_onnx(model_dir, onnx_file, device=device,
                                               threads=torch.get_num_threads())  # as torch: one thread count
        kind, device = "onnx", "cpu"  # the session holds the device; its inputs are built on the host
    else:
        model, tokenizer, id2label = load_classifier(model_dir, trust_remote_code=trust_remote_code)
        kind = "pytorch"
    max_length = check_max_length(model.config, max_length, model_dir)
    labels = tuple(id2label[i] for i in range(len(id2label)))
    backend = _pytorch_backend(model, tokenizer, labels, batch_size=batch_size, max_length=max_length, device=device,
                               split_batches=split_batches)
    backend.kind = kind
    return backend


# ---------------------------------------------------------------------------------------------
# Streaming TSV in and out
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _open_input(source: str | Path) -> Iterator[tuple[BinaryIO, str]]:
    """(binary stream, name for messages); `-` is stdin."""
    if str(source) == STDIO:
        yield sys.stdin.buffer, "<stdin>"
        return
    path = Path(source)
    if not path.exists():
        raise _missing_file_error(path)
    if path.is_dir():
        raise AfroCometError("is a folder, expected a .tsv file", path=path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise AfroCometError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    with fh:
        yield fh, str(path)


def _lines(stream: Iterable[bytes], name: str) -> Iterator[str]:
    """Decoded lines without `\\n` / `\\r\\n`, with `read_tsv`'s rules (bad bytes, blank lines, BOM)."""
    offset, blank_at = 0, None
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AfroCometError(f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {offset + exc.start} "
                                 f"(byte {exc.start + 1} of the line); save the file as UTF-8", name, number) from None
        offset += len(raw)
        line = line.removesuffix("\n").removesuffix("\r")
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            blank_at = blank_at or number  # fine if only blank lines follow, up to the end
            continue
        if blank_at is not None:
            raise AfroCometError("blank line (only the end of the file may have blank lines)", name, blank_at)
        yield line


def read_tsv_chunks(source: str | Path, *, labels: Sequence[str] | None = LABELS, require_label: bool = False,
                    chunk_rows: int = CHUNK_ROWS) -> Iterator[list[Example]]:
    """Read a TSV file (`-`: stdin) as lists of at most `chunk_rows` examples, checked like `read_tsv`.

    Only one chunk is held at a time (plus the IDs seen, to reject duplicates). An empty file or
    a header without rows is an error, raised before the first chunk.
    """
    if chunk_rows < 1:
        raise AfroCometError(f"chunk_rows must be at least 1, got {chunk_rows}")
    with _open_input(source) as (stream, name):
        rows = _rows(_lines(stream, name), name)  # type: ignore[arg-type]
        first = next(rows, None)
        if first is None:
            raise AfroCometError("file is empty (expected a header line such as 'tweet<TAB>label')", path=name)
        header = first[1]
        columns = _header_columns(header, name, require_label)  # type: ignore[arg-type]
        seen_ids: dict[str, int] = {}
        chunk: list[Example] = []
        n_rows = 0
        for number, row in rows:
            chunk.append(_parse_row(row, len(header), columns, name, number, labels, seen_ids))
            n_rows += 1
            if len(chunk) == chunk_rows:
                yield chunk
                chunk = []
        if n_rows == 0:
            raise AfroCometError("file has a header but no rows", path=name)
        if chunk:
            yield chunk


@contextlib.contextmanager
def _open_output(target: str | Path) -> Iterator[TextIO]:
    """A UTF-8 text stream: stdout for `-` (streamed), else a temporary file renamed into place at the end."""
    if str(target) == STDIO:
        sys.stdout.flush()
        out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
        try:
            yield out
        finally:
            out.flush()
            out.detach()  # leave sys.stdout open
        return
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        yield fh


# ---------------------------------------------------------------------------------------------
# Prediction and evaluation
# ---------------------------------------------------------------------------------------------


def predict_file(model_dir: str | Path, input: str | Path, output: str | Path, *, batch_size: int = 64,
                 max_length: int | None = None, device: str = "auto", chunk_rows: int = CHUNK_ROWS,
                 trust_remote_code: bool = False, onnx_file: str | None = None) -> dict:
    """Label every row of `input` and write `ID<TAB>label` rows to `output` (`-`: stdin / stdout).

    The file is streamed `chunk_rows` rows at a time. An output file appears only when all rows
    are written; on any error it is not created (stdout may have received the earlier chunks).
    Returns n, truncated (texts longer than max_length tokens), max_length, labels, and
    `metrics` (see `compute_metrics`) when the input has a label column, else None.
    """
    check_output_file(output, [("input", input), ("model folder", model_dir)], flag="--output")  # before any work
    backend = open_backend(model_dir, batch_size=batch_size, max_length=max_length, device=device,
                           trust_remote_code=trust_remote_code, onnx_file=onnx_file)
    label_ids = {lab: i for i, lab in enumerate(backend.labels)}
    gold: list[int] = []  # class ids, only when the input has labels
    pred: list[int] = []
    n = n_truncated = 0
    with _open_output(output) as out:
        for chunk in read_tsv_chunks(input, labels=backend.labels, chunk_rows=chunk_rows):
            logits, truncated = backend.predict([ex.text for ex in chunk])  # [len(chunk), num_labels]
            ids = logits.argmax(axis=-1).tolist()
            if n == 0:
                out.write("ID\tlabel\n")
            out.write("".join(f"{n + i if ex.id is None else ex.id}\t{backend.labels[p]}\n"
                              for i, (ex, p) in enumerate(zip(chunk, ids))))
            if chunk[0].label is not None:
                gold.extend(label_ids[ex.label] for ex in chunk)  # type: ignore[index]
                pred.extend(ids)
            n += len(chunk)
            n_truncated += truncated
    metrics = compute_metrics(gold, pred, backend.labels) if gold else None
    return {"n": n, "truncated": n_truncated, "max_length": backend.max_length, "labels": list(backend.labels),
            "output": str(output), "metrics": metrics}


def _test_sets(
    labels: tuple[str, ...], languages, data_dir, split: str, test, download: bool
) -> dict[str, list[Example]]:
    """name -> labelled examples: a custom test file, or AfriSenti's `split` of each language."""
    if test is not None:
        return {Path(test).stem: read_tsv(test, labels=labels)}
    missing = [lab for lab in LABELS if lab not in labels]
    if missing:
        raise AfroCometError(f"the model's labels ({', '.join(labels)}) lack AfriSenti's {', '.join(missing)}; "
                             "check id2label in its config.json, or evaluate on your own file with test=")
    datasets = load_afrisenti(languages, data_dir, splits=(split,), download=download)
    return {lang: ds.splits[split] for lang, ds in datasets.items()}


def evaluate_model(model_dir: str | Path, *, languages: str | Iterable[str] = DEFAULT_LANGUAGES,
                   data_dir: str | Path | None = None, split: str = "test", test: str | Path | None = None,
                   batch_size: int = 64, max_length: int | None = None, device: str = "auto",
                   download: bool = True, trust_remote_code: bool = False, onnx_file: str | None = None) -> dict:
    """Metrics of a saved classifier per language (AfriSenti `split`) or on one labelled `test` file.

    Returns {"model", "split", "test", "max_length", "languages": {name: metrics + truncated},
    "average": unweighted mean over languages of accuracy / weighted F1 / macro F1}.
    """
    backend = open_backend(model_dir, batch_size=batch_size, max_length=max_length, device=device,
                           trust_remote_code=trust_remote_code, onnx_file=onnx_file)
    sets = _test_sets(backend.labels, languages, data_dir, split, test, download)
    per_language = {}
    for name, examples in sets.items():
        logits, truncated = backend.predict([ex.text for ex in examples])  # [n, num_labels]
        metrics = compute_metrics([ex.label for ex in examples], logits.argmax(axis=-1).tolist(), backend.labels)
        per_language[name] = {**metrics, "truncated": truncated}
    return {"model": str(model_dir), "split": None if test is not None else split,
            "test": None if test is None else str(test), "max_length": backend.max_length,
            "labels": list(backend.labels), "languages": per_language, "average": average_metrics(per_language)}
