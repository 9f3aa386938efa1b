"""Evaluation: metrics, teacher retention, model predictions and simple baselines.

Model predictions run through `afrocomet.inference.predict_logits` (re-exported here).

Metrics follow the AfriSenti-SemEval 2023 scorer: the official score is scikit-learn's
`f1_score(average="weighted")`. Class ids are positions in `LABELS` (id2label = enumerate(LABELS)).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from afrocomet.data.schema import LABELS
from afrocomet.errors import AfroCometError
from afrocomet.inference import predict_logits
from afrocomet.models import ngram
from afrocomet.models.ngram import C_GRID

AVERAGED_KEYS: tuple[str, ...] = ("accuracy", "weighted_f1", "macro_f1")


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def _to_ids(values: Sequence[int | str], labels: Sequence[str], what: str) -> list[int]:
    """Map label names or class ids to class ids in `labels` order; reject anything else."""
    index = {lab: i for i, lab in enumerate(labels)}
    ids = []
    for pos, v in enumerate(values):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= int(v) < len(labels):
            ids.append(int(v))
        elif isinstance(v, str) and v in index:
            ids.append(index[v])
        else:
            raise AfroCometError(f"{what}[{pos}] = {v!r} is not one of the labels {list(labels)} or a class id 0..{len(labels) - 1}")
    return ids


def compute_metrics(
    y_true: Sequence[int | str], y_pred: Sequence[int | str], labels: Sequence[str] = LABELS
) -> dict[str, Any]:
    """Accuracy, weighted F1 (official AfriSenti score), macro F1, per-class F1 and confusion matrix.

    `y_true` and `y_pred` hold label names or class ids (positions in `labels`). A class absent
    from both gets F1 0.0 (it counts in macro F1, not in weighted F1, whose weights are supports).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score  # scipy: only where metrics are computed

    if len(y_true) != len(y_pred):
        raise AfroCometError(f"{len(y_true)} gold labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise AfroCometError("cannot compute metrics on zero examples")
    t = _to_ids(y_true, labels, "y_true")
    p = _to_ids(y_pred, labels, "y_pred")
    ids = list(range(len(labels)))
    per_class = f1_score(t, p, labels=ids, average=None, zero_division=0.0)
    cm = confusion_matrix(t, p, labels=ids)  # [num_labels, num_labels], rows true, cols pred
    return {
        "accuracy": float(accuracy_score(t, p)),
        "weighted_f1": float(f1_score(t, p, labels=ids, average="weighted", zero_division=0.0)),
        "macro_f1": float(f1_score(t, p, labels=ids, average="macro", zero_division=0.0)),
        "per_class_f1": {lab: float(f) for lab, f in zip(labels, per_class)},
        "confusion_matrix": cm.tolist(),
        "support": {lab: int(n) for lab, n in zip(labels, cm.sum(axis=1))},
        "n": len(t),
    }


def average_metrics(per_language: Mapping[str, Mapping[str, Any]], keys: Sequence[str] = AVERAGED_KEYS) -> dict[str, float]:
    """Unweighted mean over languages (each language counts once, as in the paper's 'avg')."""
    if not per_language:
        raise AfroCometError("cannot average metrics over zero languages")
    out = {}
    for key in keys:
        missing = [lang for lang, m in per_language.items() if key not in m]
        if missing:
            raise AfroCometError(f"metric {key!r} missing for language(s) {missing}")
        out[key] = float(np.mean([float(m[key]) for m in per_language.values()]))
    return out


def retention(
    student: Mapping[str, Any], teacher: Mapping[str, Any], keys: Sequence[str] = AVERAGED_KEYS
) -> dict[str, float | None]:
    """Student score / teacher score per metric; None where the teacher scored 0 (undefined)."""
    out: dict[str, float | None] = {}
    for key in keys:
        s, t = float(student[key]), float(teacher[key])
        out[key] = s / t if t != 0.0 else None
    return out


# ---------------------------------------------------------------------------------------------
# Model predictions
# ---------------------------------------------------------------------------------------------


def predict_proba(model, tokenizer, texts: Sequence[str], *, batch_size: int = 64, max_length: int = 128,
                  device: str | torch.device = "cpu") -> tuple[np.ndarray, int]:
    """Class probabilities (softmax of `predict_logits`) and the truncation count."""
    logits, n_truncated = predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device)
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy(), n_truncated


def predict_labels(model, tokenizer, texts: Sequence[str], *, batch_size: int = 64, max_length: int = 128,
                   device: str | torch.device = "cpu") -> tuple[list[int], int]:
    """Predicted class ids (argmax of the logits) in input order, and the truncation count."""
    logits, n_truncated = predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device)
    return [int(i) for i in logits.argmax(axis=-1)], n_truncated


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------


TFIDF_C_GRID: tuple[float, ...] = C_GRID  # the inverse regularisation strengths tried on dev


def tfidf_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence[int | str],
    test_texts: Sequence[str],
    *,
    seed: int = 0,
    C: float = 3.0,
) -> list:
    """Character n-gram TF-IDF + logistic regression (afrocomet.models.ngram) at a fixed `C`; returns
    test predictions (same type as labels). `afrocomet run` chooses C on dev instead (`tfidf_select`)."""
    return ngram.fit(train_texts, train_labels, C, seed).predict(test_texts)


def tfidf_select(
    train_texts: Sequence[str],
    train_labels: Sequence[int | str],
    dev_texts: Sequence[str],
    dev_labels: Sequence[int | str],
    test_texts: Sequence[str],
    *,
    seed: int = 0,
    grid: Sequence[float] = TFIDF_C_GRID,
) -> tuple[list, float, dict[float, float]]:
    """The TF-IDF baseline with C chosen on dev: (test predictions, chosen C, dev weighted F1 per C).

    One classifier per C of `grid`, the best dev weighted F1 wins (ties: the smaller C). The fits
    are warm-started in ascending C: the default grid took 29 s for the five languages against 12 s
    for one fixed C (2 cores under load, load average 5); it chose C = 3 on four languages, 10 on yor.
    """
    model, C, scores = ngram.select(train_texts, train_labels, dev_texts, dev_labels, seed=seed, grid=grid)
    return model.predict(test_texts), C, scores


def majority_baseline(train_labels: Sequence[int | str], n_test: int) -> list:
    """Predict the most frequent training label everywhere (ties go to the smallest label)."""
    if not train_labels:
        raise AfroCometError("the majority baseline needs at least one training label")
    counts = Counter(train_labels)
    best = max(sorted(counts), key=lambda lab: counts[lab])  # max keeps the first of equal counts
    return [best] * n_test


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def is_number(v: Any) -> bool:
    """A finite real number (Python or numpy), not a bool: what tables and reports print as a number."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def format_table(
    rows: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[str] | None = None,
    *,
    percent: bool = True,
    digits: int = 2,
    first_column: str = "system",
) -> str:
    """A markdown table: one row per system, one column per metric.

    `metrics` defaults to every numeric key in first-seen order. With `percent`, numbers
    are shown x100 (scores in [0, 1] as percentages). Missing or None values print as "-".
    """
    if metrics is None:
        metrics = list(dict.fromkeys(k for r in rows.values() for k, v in r.items() if is_number(v)))

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if is_number(v):
            v = float(v) * 100 if percent else float(v)
            return f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    header = [first_column, *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(metrics)) + "|"]
    for name, row in rows.items():
        lines.append("| " + " | ".join([cell(name), *(cell(row.get(m)) for m in metrics)]) + " |")
    return "\n".join(lines) + "\n"
