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
    from afrocomet.evaluate import compute_metrics, majority_baseline, tfidf_select

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
                pred = predict_encoded(model, ctx.data.test[lang], ctx.pad_id, ctx.device).argmax(-1)
                runs.append(compute_metrics(gold, pred.tolist(), labels))
                if system == "student" and i == 0:
                    student_preds[lang] = pred
            row[system] = _mean_over_seeds(runs)
        train_labels = ds.label_ids("train")
        pred, C, dev_scores = tfidf_select(ds.texts("train"), train_labels, ds.texts("dev"), ds.label_ids("dev"),
                                           ds.texts("test"), seed=ctx.config.seed)
        row["tfidf_baseline"] = {**compute_metrics(gold, pred, labels),
                                 "selection": {"C": C, "dev_weighted_f1": {f"{c:g}": v for c, v in dev_scores.items()}}}
        row["majority"] = compute_metrics(gold, majority_baseline(train_labels, len(gold)), labels)
        out[lang] = row
    return out, student_preds


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
