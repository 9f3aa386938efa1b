"""int8 quantisation of an exported fp32 ONNX graph (onnxruntime.quantization), for `afrocomet export --int8`.

Two modes, `INT8_MODES`:

- `static` (the default): the MatMul and embedding (Gather) weights int8 per output channel, the
  MatMuls' inputs uint8 at scales fixed once from calibration texts (min-max of each activation over
  `CALIBRATION_TEXTS` training tweets; QDQ format). A text's logits are a function of that text alone:
  the same at any batch size and beside any other texts (measured on the default run's student: max
  |logit difference| 0.0 between batch 1 and 64 on 500 Hausa test tweets; label agreement with PyTorch
  99.41% on the 15,274 test tweets).
- `dynamic`: int8 weights, each activation's scale taken at run time from the whole batch. Its
  agreement with PyTorch was higher on the same student (99.75%), and it is faster (comet at batch 1:
  1.46 against 2.04 ms, benchmarks/README.md), but a text's label can depend on the batch it is in
  (logits moved by up to 0.059 between batch 1 and 64 on 200 test tweets): a server that batches
  requests together can answer one text differently from `afrocomet predict`.

Calibration texts (never labels): the AfriSenti training split of the export's languages when it is
found locally (a seeded sample, evenly over the languages), else the parity texts (`--texts` or the
built-in samples). The source is written to parity.json.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from afrocomet.errors import AfroCometError

INT8_MODES = ("static", "dynamic")
CALIBRATION_TEXTS = 500  # training tweets whose activations fix the static scales
CALIBRATION_BATCH = 16
CALIBRATION_SEED = 0


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Drop onnxruntime.quantization's advice logged on the root logger ("consider pre-processing"):
    a NullHandler also keeps `logging.warning` from configuring the root logger as a side effect."""
    root, null = logging.getLogger(), logging.NullHandler()
    drop = logging.Filter("no record passes")  # matches no logger name: blocks every root record
    root.addHandler(null)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        root.removeHandler(null)


def calibration_texts(languages: str | Iterable[str], data_dir: str | Path | None,
                      fallback: dict[str, list[str]], fallback_source: str) -> tuple[list[str], str]:
    """(at most CALIBRATION_TEXTS texts, where they came from): AfriSenti training tweets of `languages`
    found locally (seeded, an equal share per language), else the parity texts `fallback`."""
    from afrocomet.data.afrisenti import load_afrisenti

    try:
        datasets = load_afrisenti(languages, data_dir, splits=("train",), download=False)
    except AfroCometError:
        datasets = {}
    groups = {lang: ds.texts("train") for lang, ds in datasets.items() if ds.texts("train")}
    source = "AfriSenti train split"
    if not groups:
        groups, source = fallback, fallback_source
    rng, share = np.random.default_rng(CALIBRATION_SEED), max(1, CALIBRATION_TEXTS // len(groups))
    texts = [texts[i] for texts in groups.values()
             for i in sorted(rng.choice(len(texts), min(share, len(texts)), replace=False))]
    return texts, source


def _batches(tokenizer, texts: Sequence[str], max_length: int) -> list[dict[str, np.ndarray]]:
    """The calibration inputs: padded batches of CALIBRATION_BATCH texts, encoded as `predict` encodes them."""
    from afrocomet.inference import encode_texts
    from afrocomet.onnx_model import INPUT_NAMES

    return [{name: batch[name].numpy() for name in INPUT_NAMES}
            for batch in (encode_texts(tokenizer, texts[i:i + CALIBRATION_BATCH], max_length)
                          for i in range(0, len(texts), CALIBRATION_BATCH))]


def write_int8(fp32_path: Path, int8_path: Path, mode: str = "static", *, tokenizer=None,
               texts: Sequence[str] = (), max_length: int = 128) -> Path:
    """The int8 graph of `mode` (INT8_MODES) at `int8_path`; static needs `tokenizer` and calibration `texts`."""
    from afrocomet.models.build import first_line
    from afrocomet.onnx_model import import_onnxruntime

    import_onnxruntime()  # the extra's one-line error when it is missing
    from onnxruntime import quantization as q

    if mode not in INT8_MODES:
        raise AfroCometError(f"unknown int8 mode {mode!r} (choose from {', '.join(INT8_MODES)})")
    try:
        with quiet_root_logger():
            if mode == "dynamic":
                q.quantize_dynamic(str(fp32_path), str(int8_path), weight_type=q.QuantType.QInt8)
                return int8_path
            if not texts:
                raise AfroCometError("static int8 quantisation needs calibration texts")
            reader = _reader(_batches(tokenizer, texts, max_length))
            q.quantize_static(str(fp32_path), str(int8_path), reader, quant_format=q.QuantFormat.QDQ,
                              op_types_to_quantize=["MatMul", "Gather"], per_channel=True, weight_type=q.QuantType.QInt8,
                              activation_type=q.QuantType.QUInt8, calibrate_method=q.CalibrationMethod.MinMax,
                              extra_options={"ActivationSymmetric": False})
    except AfroCometError:
        raise
    except Exception as exc:
        raise AfroCometError(f"int8 quantisation failed: {first_line(exc)}", path=fp32_path) from exc
    return int8_path


def _reader(batches: list[dict[str, np.ndarray]]):
    """onnxruntime's CalibrationDataReader over prepared batches (get_next: each batch, then None)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return Reader()
