"""Reading a run's results dict (the content of `results.json`) and its per-stage JSONL logs.

Any part may be missing (no ablations, one custom "language", no logs): the readers return what
is there, never a guess.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from afrocomet.data.schema import LABELS, LANGUAGE_NAMES
from afrocomet.evaluate import is_number as _is_number

SYSTEM_NAMES: dict[str, str] = {
    "teacher": "teacher (transformer)",
    "tfidf_baseline": "char n-gram (TF-IDF + LR)",
    "teacher_combined": "combined teacher (transformer + n-gram)",
    "student": "student (hybrid KD)",
    "student_paper": "student (paper: transformer teacher)",
    "student_kd_only": "student (KD only)",
    "student_no_distill": "student (labels only)",
    "student_labels_converged": "student (labels only, converged)",  # results of earlier versions
    "student_adaptive": "student (adaptive weights)",
    "student_random_init": "student (random init)",
    "student_teacher_init": "student (PCA init from teacher)",
    "student_layers_init": "student (layers copied from teacher)",
    "majority": "majority class",
}
# XLM-R's pretraining languages among AfriSenti's five (the pretrained teachers descend from XLM-R)
SEEN: tuple[str, ...] = ("hau", "swa")
UNSEEN: tuple[str, ...] = ("ibo", "kin", "yor")
METRICS: dict[str, str] = {"accuracy": "accuracy", "weighted_f1": "weighted F1", "macro_f1": "macro F1"}
# The ablation: the same student and training rule, trained with fewer of the hybrid loss terms in both stages.
ABLATION: dict[str, str] = {
    "student": "hybrid KD (logits + attention + labels)",
    "student_kd_only": "KD only (logits + labels, no attention)",
    "student_no_distill": "no distillation (labels only)",
}
LOSS_TERMS: tuple[str, ...] = ("kd", "attention", "hard", "total")  # each keeps colour C0..C3 in every plot
LOG_META_KEYS = frozenset({"step", "epoch", "lr", "temperature", "dev_score"})


# ---------------------------------------------------------------------------------------------
# The results dict
# ---------------------------------------------------------------------------------------------


def _get(d: Any, *keys: str) -> Any:
    """`d[k1][k2]...`, or None where any level is missing or not a mapping."""
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _languages(results: Mapping) -> dict[str, dict[str, dict]]:
    """language -> system -> metrics, keeping only well-formed entries."""
    langs = results.get("languages") or {}
    return {lang: {s: m for s, m in per.items() if isinstance(m, Mapping)}
            for lang, per in langs.items() if isinstance(per, Mapping)}


def _systems(results: Mapping) -> list[str]:
    """Systems with any numbers, in the run's order (then first seen)."""
    seen = [s for s in results.get("systems") or [] if isinstance(s, str)]
    for per in _languages(results).values():
        seen += [s for s in per if s not in seen]
    seen += [s for s in results.get("average") or {} if s not in seen]
    return [s for s in seen if _average(results, s) or any(s in per for per in _languages(results).values())]


def _average(results: Mapping, system: str) -> dict[str, float]:
    """The run's average for `system`; a missing metric is the unweighted mean over languages."""
    given = _get(results, "average", system)
    out = {k: float(v) for k, v in (given or {}).items() if _is_number(v)}
    per = [m[system] for m in _languages(results).values() if system in m]
    for key in METRICS:
        values = [float(m[key]) for m in per if _is_number(m.get(key))]
        if key not in out and values and len(values) == len(per):
            out[key] = float(np.mean(values))
    return out


def _avg_f1(results: Mapping, system: str) -> tuple[float | None, float | None]:
    """(average weighted F1, its seed std) of `system`; None where absent."""
    avg = _average(results, system)
    return avg.get("weighted_f1"), avg.get("weighted_f1_std")


def _retention(results: Mapping) -> dict[str, float]:
    """student / teacher per averaged metric: the run's numbers, else computed from the averages."""
    given = {k: float(v) for k, v in (results.get("retention") or {}).items() if _is_number(v)}
    if given:
        return given
    s, t = _average(results, "student"), _average(results, "teacher")
    return {k: s[k] / t[k] for k in METRICS if k in s and t.get(k)}


def _labels(results: Mapping, size: int | None = None) -> list[str]:
    labels = [str(x) for x in results.get("labels") or LABELS]
    if size is not None and len(labels) != size:
        return [str(i) for i in range(size)]
    return labels


def _lang_name(code: str) -> str:
    return f"{LANGUAGE_NAMES[code]} ({code})" if code in LANGUAGE_NAMES else code


def _system_name(system: str) -> str:
    return SYSTEM_NAMES.get(system, system)


def _is_afrisenti(results: Mapping) -> bool:
    langs = list(_languages(results)) or list(_get(results, "config", "data", "languages") or [])
    return not langs or any(lang in LANGUAGE_NAMES for lang in langs)


# ---------------------------------------------------------------------------------------------
# Stage logs
# ---------------------------------------------------------------------------------------------


def read_log(path: str | Path) -> list[dict]:
    """The records of a stage's JSONL log; lines that are not JSON objects with a step are skipped
    (an interrupted run leaves a half-written last line). A missing file gives []."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and _is_number(row.get("step")):
            rows.append(row)
    return rows


def _log_path(name: str, stage: Mapping, out_dir: Path) -> Path | None:
    """The stage's log: its `log` entry (relative to out_dir, or absolute), else logs/<name>/log.jsonl."""
    candidates = []
    if isinstance(stage.get("log"), str) and stage["log"]:
        candidates.append(out_dir / stage["log"])  # an absolute `log` stays absolute
    candidates.append(out_dir / "logs" / name / "log.jsonl")
    return next((p for p in candidates if p.is_file()), None)


def _loss_series(rows: Sequence[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """term -> (steps, values) for every loss term in the training lines of a log."""
    train = [r for r in rows if "dev_score" not in r]
    names = [t for t in LOSS_TERMS if any(t in r for r in train)]
    names += sorted({k for r in train for k, v in r.items() if k not in LOG_META_KEYS and _is_number(v)} - set(names))
    series = {}
    for name in names:
        pairs = [(float(r["step"]), float(r[name])) for r in train if _is_number(r.get(name))]
        if pairs:
            steps, values = np.array(pairs).T  # [2, n]
            series[name] = (steps, values)
    return series
