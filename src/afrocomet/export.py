"""Export a saved classifier to ONNX (fp32, optionally int8), with parity checked at export time.

`export_onnx(model_dir, out)` writes, all at once (a failed export leaves nothing):

| file | what |
|---|---|
| `model.onnx` | fp32 graph: `input_ids`, `attention_mask` int64 [batch, seq] (both axes dynamic) -> `logits` [batch, labels] |
| `model.int8.onnx` | with `int8=True`: the fp32 graph quantised to int8 (afrocomet/quantize.py: static, calibrated on training tweets, by default; or dynamic) |
| `config.json`, tokenizer files | the source folder's, so the folder is opened like any model folder |
| `parity.json` | fp32: max abs logit difference vs PyTorch (must be <= 1e-4, else nothing is written); int8: label agreement with PyTorch (goal >= 99%; below it the folder is still written, marked `ok: false`, with a warning) |

Parity texts, in this order: the `texts` given (`--texts FILE`); else the AfriSenti test split of
the chosen languages when it is found locally (`data_dir`, $AFROCOMET_DATA or the cache; nothing
is downloaded); else, with a warning, `SAMPLE_TEXTS` (a few dozen short sentences in the AfriSenti
languages): enough to check the graph, too few to trust an int8 label agreement.

The graph is traced with torch's TorchScript exporter (`dynamo=False`): it needs no extra package
(the dynamo exporter needs onnxscript) and gives the same logits as PyTorch to ~1e-7 on XLM-R.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from afrocomet.data.schema import DEFAULT_LANGUAGES
from afrocomet.errors import AfroCometError
from afrocomet.inference import predict_logits
from afrocomet.io import atomic_dir, atomic_write_json
from afrocomet.models.build import first_line
from afrocomet.outputs import TOKENIZER_FILES, check_output_folder
from afrocomet.onnx_model import INPUT_NAMES, INT8_FILE, ONNX_FILE, OUTPUT_NAME, import_onnxruntime, load_onnx_classifier
from afrocomet.quantize import calibration_texts, write_int8
from afrocomet.tokenizer import write_tokenizer

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
FP32_TOLERANCE = 1e-4  # max |logit difference| between the fp32 graph and PyTorch
INT8_GOAL = 0.99  # label agreement of the int8 graph with PyTorch
PARITY_FILE = "parity.json"

# The fallback parity texts when neither texts nor AfriSenti are at hand: short everyday
# sentences (Hausa, Igbo, Kinyarwanda, Swahili, Yoruba, Nigerian Pidgin) and a few tweet-like ones.
SAMPLE_TEXTS: tuple[str, ...] = (
    "Ina son wannan waka sosai", "Ban ji dadin abin da ya faru yau ba", "Allah ya kiyaye mu baki daya",
    "Yau rana ce mai kyau", "Gaskiya wannan gwamnati ba ta kyauta ba", "Mun gode da taimakonku",
    "Obi di m ụtọ taa", "Nke a adịghị mma ma ọlị", "Chineke gozie gị", "Ahụrụ m gị n'anya",
    "Ndashimye cyane iyi ndirimbo", "Uyu munsi ni umunsi mwiza", "Ntabwo nishimiye ibyabaye",
    "Nimefurahi sana leo", "Hii si sawa kabisa", "Asante kwa msaada wako", "Habari za asubuhi rafiki",
    "Inu mi dun pupo loni", "Eyi ko dara rara", "E ku ise o, Olorun a bukun yin", "Mo nifẹ orin yii",
    "Dis tin sweet me die", "Wetin dey happen for this country sef", "I no like as e dey go",
    "@user thank you so much 🙏🏾❤️", "Na wa o! light don go again 😡", "Congratulations to the team!!! 🎉",
    "Wannan magana ba ta da amfani #Najeriya", "Mchezo wa jana ulikuwa mzuri sana ⚽", "ok",
)


# ---------------------------------------------------------------------------------------------
# Parity texts
# ---------------------------------------------------------------------------------------------


def parity_texts(languages: str | Iterable[str] = DEFAULT_LANGUAGES, data_dir: str | Path | None = None,
                 texts: Sequence[str] | str | Path | None = None,
                 max_texts: int | None = None) -> tuple[dict[str, list[str]], str]:
    """({group: texts}, where they came from): given texts, AfriSenti test, or the built-in samples.

    A `texts` path is read as a TSV with a `tweet` or `text` column. `max_texts` keeps that many
    texts in all, spread evenly over each group's file (the files are sorted by label).
    """
    from afrocomet.data.afrisenti import load_afrisenti, read_tsv
    from afrocomet.data.download import DATA_ENV, check_languages

    languages = check_languages(languages)  # an unknown code is an error, not a reason to fall back
    if isinstance(texts, (str, Path)):
        examples = read_tsv(texts, labels=None, require_label=False)
        groups, source = {Path(texts).stem: [ex.text for ex in examples]}, f"texts from {texts}"
    elif texts is not None:
        groups, source = {"texts": list(texts)}, f"{len(texts)} given texts"
    elif data_dir is None and not os.environ.get(DATA_ENV):
        try:
            groups = _afrisenti_test(load_afrisenti(languages, None, splits=("test",), download=False))
            source = "AfriSenti test split"
        except AfroCometError as exc:
            log.warning("AfriSenti not found (%s); parity is checked on %d built-in sample sentences only: pass "
                        "--data-dir or --texts for a real check", exc, len(SAMPLE_TEXTS))
            groups, source = {"samples": list(SAMPLE_TEXTS)}, "built-in sample sentences (AfriSenti not found)"
    else:  # a folder the user named must hold the data
        groups = _afrisenti_test(load_afrisenti(languages, data_dir, splits=("test",), download=False))
        source = "AfriSenti test split"
    groups = {name: values for name, values in groups.items() if values}
    if not groups:
        raise AfroCometError("no parity texts (the given texts are empty)")
    return _cap(groups, max_texts), source


def _flat(groups: dict[str, list[str]]) -> list[str]:
    return [t for values in groups.values() for t in values]


def _afrisenti_test(datasets: dict) -> dict[str, list[str]]:
    return {lang: ds.texts("test") for lang, ds in datasets.items()}


def _cap(groups: dict[str, list[str]], max_texts: int | None) -> dict[str, list[str]]:
    """At most `max_texts` in all (each group gets its share, at least one), evenly spaced in each group."""
    total = sum(len(v) for v in groups.values())
    if max_texts is None or total <= max_texts:
        return groups
    if max_texts < 1:
        raise AfroCometError(f"max_texts must be at least 1, got {max_texts}")
    out = {}
    for name, values in groups.items():
        keep = max(1, round(max_texts * len(values) / total))
        out[name] = [values[i] for i in np.linspace(0, len(values) - 1, min(keep, len(values))).round().astype(int)]
    return out


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


class _LogitsOnly(torch.nn.Module):
    """(input_ids, attention_mask) -> logits: the graph's exact signature, nothing else traced."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, num_labels]


def write_onnx(model: torch.nn.Module, tokenizer, path: Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Trace `model` (a sequence classifier, on the CPU) to an fp32 ONNX graph at `path`.

    The example batch has padding, so the traced graph keeps the attention-mask path; batch and
    sequence axes are dynamic.
    """
    example = tokenizer(["afrocomet export example with padding", "short"], padding=True, return_tensors="pt")
    args = (example["input_ids"], example["attention_mask"])  # [2, S] each
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            OUTPUT_NAME: {0: "batch"}}
    model = model.to("cpu").eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape checks that are constant for this model
        try:
            torch.onnx.export(_LogitsOnly(model), args, str(path), input_names=list(INPUT_NAMES),
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset, dynamo=False)
        except Exception as exc:  # the exporter raises many types (unsupported op, opset, ...)
            raise AfroCometError(f"ONNX export failed (opset {opset}): {first_line(exc)}") from exc
    return path


def _logits(model, tokenizer, groups: dict[str, list[str]], batch_size: int, max_length: int) -> dict[str, np.ndarray]:
    return {name: predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)[0]
            for name, texts in groups.items()}  # name -> [n, num_labels]


def compare_logits(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, Any]:
    """Max |logit difference| and argmax agreement, overall and per group."""
    per_group = {name: {"n": len(ref), "max_abs_logit_diff": float(np.abs(ref - other[name]).max()),
                        "label_agreement": float((ref.argmax(-1) == other[name].argmax(-1)).mean())}
                 for name, ref in reference.items()}
    n = sum(g["n"] for g in per_group.values())
    return {"n": n, "max_abs_logit_diff": max(g["max_abs_logit_diff"] for g in per_group.values()),
            "label_agreement": sum(g["label_agreement"] * g["n"] for g in per_group.values()) / n,
            "per_group": per_group}


EXPORT_FILES = ("model*.onnx", "model*.onnx.data", PARITY_FILE, "config.json", *TOKENIZER_FILES)


def _check_out(out: str | Path, model_dir: str | Path, texts, data_dir) -> Path:
    """The output folder (`afrocomet.outputs`): not an input, and new, empty or an earlier export
    (it holds parity.json and only what an export writes)."""
    from afrocomet.data.download import data_files_in_use

    texts_file = texts if isinstance(texts, (str, Path)) else None
    inputs = [("model folder", model_dir), ("texts file", texts_file),
              *(data_files_in_use(data_dir) if texts is None else [])]
    return check_output_folder(out, inputs, writes=EXPORT_FILES, marker=PARITY_FILE, what="an export",
                               earlier="an earlier export")


def _check_fp32(result: dict[str, Any]) -> None:
    if not result["max_abs_logit_diff"] <= FP32_TOLERANCE:  # also catches NaN
        raise AfroCometError(f"fp32 ONNX logits differ from PyTorch by up to {result['max_abs_logit_diff']:.3g} "
                             f"(tolerance {FP32_TOLERANCE:g}) on {result['n']} texts; nothing written. Try another "
                             "--opset, or report the model's architecture")


def _warn_int8(result: dict[str, Any]) -> None:
    log.warning("int8 ONNX agrees with PyTorch on only %.2f%% of %d labels (goal %.0f%%): the int8 model is "
                "written but marked ok: false in %s; use model.onnx (fp32) for this model",
                100 * result["label_agreement"], result["n"], 100 * INT8_GOAL, PARITY_FILE)


def export_onnx(model_dir: str | Path, out: str | Path, *, int8: bool = False, int8_mode: str = "static",
                opset: int = DEFAULT_OPSET,
                languages: str | Iterable[str] = DEFAULT_LANGUAGES, data_dir: str | Path | None = None,
                texts: Sequence[str] | str | Path | None = None, max_texts: int | None = None,
                batch_size: int = 64, max_length: int | None = None) -> dict[str, Any]:
    """Export the classifier in `model_dir` to an ONNX folder `out`; returns what parity.json holds.

    The fp32 graph must match PyTorch's logits to `FP32_TOLERANCE` on the parity texts, else
    `AfroCometError` and nothing is written. The int8 graph's label agreement is recorded with
    `ok` (>= `INT8_GOAL`) and a warning when it falls short; `int8_mode`: afrocomet.quantize's INT8_MODES
    (static: calibrated on training tweets, a text's label independent of its batch). `max_length` defaults to the model's
    position limit (at most 512).
    """
    from afrocomet.predict import check_max_length, load_classifier

    import_onnxruntime()
    out = _check_out(out, model_dir, texts, data_dir)  # before anything is loaded or computed
    model, tokenizer, _ = load_classifier(model_dir)
    max_length = check_max_length(model.config, max_length, model_dir)
    groups, source = parity_texts(languages, data_dir, texts, max_texts)
    reference = _logits(model, tokenizer, groups, batch_size, max_length)
    threads = torch.get_num_threads()
    parity: dict[str, Any] = {"model": str(model_dir), "texts": {"source": source, "groups": list(groups),
                              "n": sum(map(len, groups.values())), "max_length": max_length},
                              "opset": opset, "torch": torch.__version__,
                              "onnxruntime": import_onnxruntime().__version__}
    with atomic_dir(out) as tmp:
        model.config.save_pretrained(str(tmp))
        write_tokenizer(tokenizer, tmp, model.config)  # with model_max_length
        write_onnx(model, tokenizer, tmp / ONNX_FILE, opset=opset)
        fp32 = compare_logits(reference, _logits(load_onnx_classifier(tmp, ONNX_FILE, threads=threads), tokenizer,
                                                 groups, batch_size, max_length))
        _check_fp32(fp32)
        parity["fp32"] = {"file": ONNX_FILE, **fp32, "tolerance": FP32_TOLERANCE, "ok": True}
        if int8:
            calibration, calibration_source = [], ""  # dynamic int8 takes its scales at run time
            if int8_mode == "static":
                calibration, calibration_source = calibration_texts(languages, data_dir, groups, source) \
                    if texts is None else (_flat(groups), source)
            write_int8(tmp / ONNX_FILE, tmp / INT8_FILE, int8_mode, tokenizer=tokenizer, texts=calibration,
                       max_length=max_length)
            q = compare_logits(reference, _logits(load_onnx_classifier(tmp, INT8_FILE, threads=threads), tokenizer,
                                                  groups, batch_size, max_length))
            parity["int8"] = {"file": INT8_FILE, "mode": int8_mode, **q, "goal": INT8_GOAL,
                              "ok": q["label_agreement"] >= INT8_GOAL}
            if int8_mode == "static":
                parity["int8"]["calibration"] = {"source": calibration_source, "n": len(calibration)}
            if not parity["int8"]["ok"]:
                _warn_int8(q)
        parity["ok"] = parity["fp32"]["ok"] and parity.get("int8", {}).get("ok", True)
        atomic_write_json(tmp / PARITY_FILE, parity)
    return parity
