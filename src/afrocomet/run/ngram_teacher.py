"""The combined teacher of stage 2: the transformer plus a character n-gram model.

Knowledge distillation can only hand on what the teacher knows beyond the labels; on AfriSenti a
char 2-5-gram TF-IDF + LR model (models/ngram.py) knows things a small transformer trained on a few
thousand tweets does not, and costs seconds to fit. The combined teacher's class probabilities are

    p = w · softmax(z / T) + (1 - w) · p_ngram

with z the transformer's logits, T the stage's temperature, and one weight w for all languages
chosen on dev (W_GRID; ties go to the larger w, nearer the paper's transformer-only teacher). Per
language, the n-gram model's C is chosen on dev (the same model is the run's `tfidf_baseline` row);
its probabilities on the training tweets are **out of fold** (k-fold cross-fitting: each tweet's
from a model that never saw it), since in-sample ones are near one-hot memorisation. Stage 2's
logit KD reads p (distill.losses.combined_teacher_logits); attention matching reads the transformer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from afrocomet.run.context import Context
from afrocomet.run.inputs import RunData

log = logging.getLogger("afrocomet")

W_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))  # w of the transformer


@dataclass
class NgramTeacher:
    """What the combined teacher is made of, per language, and the weight chosen on dev."""

    weight: float  # w of the transformer
    temperature: float  # T of softmax(z / T) in the mixture (stage 2's)
    train_proba: dict[str, np.ndarray]  # out-of-fold [n_train, C] per language
    dev_proba: dict[str, np.ndarray]
    test_proba: dict[str, np.ndarray]
    selection: dict[str, dict] = field(default_factory=dict)  # language -> C and its dev scores
    weight_search: dict[str, float] = field(default_factory=dict)  # "w" -> mean dev weighted F1 of the mixture
    out_of_fold: dict[str, float] = field(default_factory=dict)  # weighted F1 of the OOF probabilities on train
    seconds: float = 0.0

    def mix(self, teacher_logits: np.ndarray, lang: str, split: str, weight: float | None = None) -> np.ndarray:
        """The combined teacher's probabilities [n, C] on a dev or test split, from the transformer's logits."""
        w = self.weight if weight is None else weight
        soft = torch.softmax(torch.from_numpy(np.asarray(teacher_logits, dtype=np.float32)) / self.temperature, -1)
        other = (self.dev_proba if split == "dev" else self.test_proba)[lang]
        return w * soft.numpy() + (1.0 - w) * other

    def record(self) -> dict:
        """For results.json (`ngram_teacher`)."""
        return {"weight": self.weight, "temperature": self.temperature, "weight_grid": list(W_GRID),
                "dev_weighted_f1": self.weight_search, "folds": _folds(), "selection": self.selection,
                "out_of_fold_train_weighted_f1": self.out_of_fold, "seconds": round(self.seconds, 1)}


def _folds() -> int:
    from afrocomet.models.ngram import FOLDS

    return FOLDS


def task_temperature(ctx: Context) -> float:
    """The temperature of the run's distill-task stage (the mixture softens the transformer by it)."""
    stage = next((s for s in ctx.config.stages if s.kind == "distill-task"), None)
    return 1.0 if stage is None else float(stage.temperature)


def fit_ngram_teacher(ctx: Context, teacher: nn.Module) -> NgramTeacher:
    """Per language: the n-gram model with C chosen on dev, its dev/test probabilities and out-of-fold
    training probabilities; then w chosen on dev against the transformer's dev logits."""
    t0, seed, classes = time.perf_counter(), ctx.config.seed, len(ctx.data.labels)
    splits = {lang: {split: (ds.texts(split), ds.label_ids(split)) for split in ("train", "dev", "test")}
              for lang, ds in ctx.data.datasets.items()}
    fits = [fit_language(s, classes, seed) for s in splits.values()]
    per = dict(zip(splits, fits))
    combined = NgramTeacher(1.0, task_temperature(ctx), *({lang: f[k] for lang, f in per.items()}
                                                            for k in ("train", "dev", "test", "selection")),
                            out_of_fold={lang: f["oof_f1"] for lang, f in per.items()})
    combined.weight_search = weight_scores(ctx, teacher, combined)
    combined.weight = float(max(combined.weight_search, key=lambda w: (combined.weight_search[w], float(w))))
    combined.seconds = time.perf_counter() - t0
    log.info("combined teacher: w %.1f of the transformer chosen on dev (%s); n-gram C %s; %.1fs", combined.weight,
             ", ".join(f"{w}: {v:.4f}" for w, v in combined.weight_search.items()),
             ", ".join(f"{lang} {s['C']:g}" for lang, s in combined.selection.items()), combined.seconds)
    return combined


def fit_language(splits: dict[str, tuple[list[str], list[int]]], classes: int, seed: int) -> dict:
    """One language's n-gram model: C chosen on dev; probabilities on dev and test, out of fold on train."""
    from sklearn.metrics import f1_score

    from afrocomet.models import ngram

    (x, y), (x_dev, y_dev), (x_test, _) = splits["train"], splits["dev"], splits["test"]
    counted = ngram.count_ngrams(x)  # each tweet's n-grams, once for both
    model, C, scores = ngram.select(x, y, x_dev, y_dev, seed=seed, num_classes=classes, counted=counted)
    train = ngram.out_of_fold_proba(x, y, classes, C=C, seed=seed, counted=counted)
    return {"train": train, "dev": model.predict_proba(x_dev), "test": model.predict_proba(x_test),
            "selection": {"C": C, "dev_weighted_f1": {f"{c:g}": v for c, v in scores.items()}},
            "oof_f1": float(f1_score(y, train.argmax(-1), average="weighted", zero_division=0.0))}


def weight_scores(ctx: Context, teacher: nn.Module, combined: NgramTeacher) -> dict[str, float]:
    """{w: mean over languages of the dev weighted F1 of the mixture's argmax} over W_GRID."""
    from sklearn.metrics import f1_score

    from afrocomet.run.dev import predict_encoded

    logits = {lang: predict_encoded(teacher, data, ctx.pad_id, ctx.device) for lang, data in ctx.data.dev.items()}
    out = {}
    for w in W_GRID:
        scores = [f1_score(ctx.data.dev[lang].labels, combined.mix(z, lang, "dev", w).argmax(-1), average="weighted",
                           zero_division=0.0) for lang, z in logits.items()]
        out[f"{w:g}"] = float(np.mean(scores))
    return out


def with_soft_labels(data: RunData, combined: NgramTeacher) -> RunData:
    """The run's data with the n-gram model's out-of-fold probabilities on every training tweet
    (`Encoded.soft`, collated as `teacher_probs`), in the order of `data.train` (languages concatenated)."""
    groups = list(dict.fromkeys(data.train.groups))
    soft = np.concatenate([combined.train_proba[lang] for lang in groups]).astype(np.float32)
    if len(soft) != len(data.train) or [g for g in data.train.groups] != [g for g in groups
                                                                          for _ in range(len(combined.train_proba[g]))]:
        raise RuntimeError("the n-gram model's training rows do not line up with the run's training data")
    return replace(data, train=replace(data.train, soft=soft))
