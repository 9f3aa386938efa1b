"""Every system of one run evaluated on the test sets (mean ± std over seeds, with the TF-IDF and
majority baselines; the TF-IDF baseline's C chosen on dev), and the student's predictions in the AfriSenti submission format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from afrocomet.run.context import Context
from afrocomet.run.dev import predict_encoded
from afrocomet.run.students import ALL


def evaluate_systems(ctx: Context, models: dict[str, list[dict[str, nn.Module]]]) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics per language and system (mean ± std over seeds), plus the baselines.

    `models[system]` holds one {language or ALL: model} mapping per seed.

    Returns (languages.<lang>.<system> metrics, student test predictions per language).
    """
    from afrocomet.evaluate import compute_metrics, majority_baseline

    labels = ctx.data.labels
    out: dict[str, dict] = {}
    student_preds: dict[str, np.ndarray] = {}
    for lang, ds in ctx.data.datasets.items():
        gold = ctx.data.test[lang].labels
        row: dict[str, dict] = {}
        for system, seeded in models.items():
            runs = []
            for i, per_language in enumerate(seeded):
                model = per_language.get(lang, per_language.get(ALL))
                logits = predict_encoded(model, ctx.data.test[lang], ctx.pad_id, ctx.device)
                runs.append(compute_metrics(gold, logits.argmax(-1).tolist(), labels))
                if system == "student" and i == 0:
                    student_preds[lang] = logits.argmax(-1)
                if system == "teacher" and ctx.ngram is not None:
                    row["teacher_combined"] = compute_metrics(gold, ctx.ngram.mix(logits, lang, "test").argmax(-1).tolist(),
                                                              labels)
            row[system] = _mean_over_seeds(runs)
        row["tfidf_baseline"] = _ngram_row(ctx, lang, ds, gold)
        row["majority"] = compute_metrics(gold, majority_baseline(ds.label_ids("train"), len(gold)), labels)
        out[lang] = {k: row[k] for k in _order(row)}
    return out, student_preds


def _ngram_row(ctx: Context, lang: str, ds, gold) -> dict:
    """The char n-gram model (C chosen on dev): the combined teacher's own when there is one, else fit here."""
    from afrocomet.evaluate import compute_metrics, tfidf_select

    if ctx.ngram is not None:
        pred, selection = ctx.ngram.test_proba[lang].argmax(-1).tolist(), ctx.ngram.selection[lang]
    else:
        pred, C, dev_scores = tfidf_select(ds.texts("train"), ds.label_ids("train"), ds.texts("dev"),
                                           ds.label_ids("dev"), ds.texts("test"), seed=ctx.config.seed)
        selection = {"C": C, "dev_weighted_f1": {f"{c:g}": v for c, v in dev_scores.items()}}
    return {**compute_metrics(gold, pred, ctx.data.labels), "selection": selection}


def _order(row: dict) -> list[str]:
    """Teachers first (transformer, n-gram model, combination), then the students, then majority."""
    first = [k for k in ("teacher", "tfidf_baseline", "teacher_combined") if k in row]
    return first + [k for k in row if k not in first and k != "majority"] + ["majority"]


def _mean_over_seeds(runs: list[dict]) -> dict:
    """First seed's full metrics, with scalar metrics replaced by the mean and `<metric>_std` added."""
    merged = dict(runs[0])
    if len(runs) > 1:
        for key in ("accuracy", "weighted_f1", "macro_f1"):
            values = [r[key] for r in runs]
            merged[key] = float(np.mean(values))
            merged[f"{key}_std"] = float(np.std(values, ddof=1))
    return merged


def write_predictions(ctx: Context, preds: dict[str, np.ndarray], out: Path) -> None:
    """AfriSenti submission format: columns ID and label (ID from the input, else the row number)."""
    from afrocomet.io import atomic_write_text

    for lang, pred in preds.items():
        examples = ctx.data.datasets[lang].splits["test"]
        lines = ["ID\tlabel"]
        for i, (ex, p) in enumerate(zip(examples, pred)):
            lines.append(f"{ex.id if ex.id is not None else i}\t{ctx.data.labels[int(p)]}")
        atomic_write_text(out / "predictions" / f"{lang}.tsv", "\n".join(lines) + "\n")
