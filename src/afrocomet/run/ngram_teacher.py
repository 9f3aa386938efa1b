"""The combined teacher of stage 2: the transformer plus a character n-gram model.

Knowledge distillation can only hand on what the teacher knows beyond the labels; on AfriSenti a
char 2-5-gram TF-IDF + LR model (models/ngram.py) knows things a small transformer trained on a few
thousand tweets does not, and costs seconds to fit. The combined teacher's class probabilities are

    p = w · softmax(z / T) + (1 - w) · p_ngram

with z the transformer's logits, T the stage's temperature, and w chosen on dev per language
(W_GRID; ties go to the larger w, nearer the paper's transformer-only teacher): how much the
transformer adds to the n-gram model differs by language (on the default run's dev sets one w for
all languages gave 70.08 mean weighted F1, one per language 70.59; swa wants 0.7, ibo 0.3). Per
language, the n-gram model's C is chosen on dev (the same model is the run's `tfidf_baseline` row);
its probabilities on the training tweets are **out of fold** (k-fold cross-fitting: each tweet's
from a model that never saw it), since in-sample ones are near one-hot memorisation. Stage 2's
logit KD reads p (distill.losses.combined_teacher_logits, each training tweet at its language's w);
attention matching reads the transformer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from afrocomet.errors import InternalError
from afrocomet.run.context import Context
from afrocomet.run.inputs import RunData

log = logging.getLogger("afrocomet")

W_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))  # w of the transformer


@dataclass
class NgramTeacher:
    """What the combined teacher is made of, per language, and the weights chosen on dev."""

    weights: dict[str, float]  # language -> w of the transformer
    temperature: float  # T of softmax(z / T) in the mixture (stage 2's)
    train_proba: dict[str, np.ndarray]  # out-of-fold [n_train, C] per language
    dev_proba: dict[str, np.ndarray]
    test_proba: dict[str, np.ndarray]
    selection: dict[str, dict] = field(default_factory=dict)  # language -> C and its dev scores
    weight_search: dict[str, dict[str, float]] = field(default_factory=dict)  # language -> "w" -> dev weighted F1
    out_of_fold: dict[str, float] = field(default_factory=dict)  # weighted F1 of the OOF probabilities on train
    seconds: float = 0.0

    @property
    def weight(self) -> float:
        """The mean of the languages' w (a summary; each language's tweets use their own)."""
        return round(float(np.mean(list(self.weights.values()))), 4) if self.weights else 1.0

    @property
    def combines(self) -> bool:
        """Whether the n-gram model has a say in some language (w < 1): else it is the transformer alone."""
        return any(w < 1 for w in self.weights.values())

    def mix(self, teacher_logits: np.ndarray, lang: str, split: str, weight: float | None = None) -> np.ndarray:
        """The combined teacher's probabilities [n, C] on a dev or test split, from the transformer's logits."""
        w = self.weights[lang] if weight is None else weight
        soft = torch.softmax(torch.from_numpy(np.asarray(teacher_logits, dtype=np.float32)) / self.temperature, -1)
        other = (self.dev_proba if split == "dev" else self.test_proba)[lang]
        return w * soft.numpy() + (1.0 - w) * other

    def record(self) -> dict:
        """For results.json (`ngram_teacher`)."""
        return {"weights": self.weights, "weight": self.weight, "temperature": self.temperature,
                "weight_grid": list(W_GRID),
                "dev_weighted_f1": self.weight_search, "folds": _folds(), "selection": self.selection,
                "out_of_fold_train_weighted_f1": self.out_of_fold, "seconds": round(self.seconds, 1)}


def _folds() -> int:
    from afrocomet.models.ngram import FOLDS

    return FOLDS


def task_temperature(ctx: Context) -> float:
    """The temperature of the run's distill-task stage (the mixture softens the transformer by it)."""
    stage = next((s for s in ctx.config.stages if s.kind == "distill-task"), None)
    return 1.0 if stage is None else float(stage.temperature)


def fit_ngram_teacher(ctx: Context, dev_logits: dict[str, np.ndarray]) -> NgramTeacher:
    """Per language: the n-gram model with C chosen on dev, its dev/test probabilities and out-of-fold
    training probabilities; then that language's w chosen on dev against the transformer's dev logits
    (`run.dev.dev_logits` of the fine-tuned teacher)."""
    t0, seed, classes = time.perf_counter(), ctx.config.seed, len(ctx.data.labels)
    splits = {lang: {split: (ds.texts(split), ds.label_ids(split)) for split in ("train", "dev", "test")}
              for lang, ds in ctx.data.datasets.items()}
    per = fit_languages(splits, classes, seed, ngram_jobs(ctx, len(splits)))
    combined = NgramTeacher({lang: 1.0 for lang in per}, task_temperature(ctx),
                            *({lang: f[k] for lang, f in per.items()} for k in ("train", "dev", "test", "selection")),
                            out_of_fold={lang: f["oof_f1"] for lang, f in per.items()})
    combined.weight_search = weight_scores(ctx, dev_logits, combined)
    combined.weights = {lang: choose_weight(scores) for lang, scores in combined.weight_search.items()}
    combined.seconds = time.perf_counter() - t0
    log.info("combined teacher: w of the transformer chosen on dev per language (%s); n-gram C %s; %.1fs",
             ", ".join(f"{lang} {w:g}: {combined.weight_search[lang][f'{w:g}']:.4f}"
                       for lang, w in combined.weights.items()),
             ", ".join(f"{lang} {s['C']:g}" for lang, s in combined.selection.items()), combined.seconds)
    return combined


def choose_weight(scores: dict[str, float]) -> float:
    """The w of the best dev score (`scores`: "w" -> dev weighted F1); ties go to the larger w."""
    return float(max(scores, key=lambda w: (scores[w], float(w))))


def ngram_jobs(ctx: Context, languages: int) -> int:
    """Processes for the languages' n-gram fits, as for the student rows (`run.jobs.choose_jobs`): config.jobs,
    else one per CPU thread (torch's, at most the cores this process may use), at most the languages; 1
    under `--num-processes` (each process fits them). Each fit runs on one thread (SAGA)."""
    from afrocomet.device import available_cores
    from afrocomet.distill.parallel import processes

    if processes().world > 1:
        return 1
    jobs = ctx.config.jobs or min(torch.get_num_threads(), available_cores())
    return max(1, min(jobs, languages))


def fit_languages(splits: dict[str, dict], classes: int, seed: int, jobs: int) -> dict[str, dict]:
    """`fit_language` for each language, `jobs` at a time in spawned worker processes of one thread
    (`run.jobs.workers`, as the student rows; largest language first): on 2 cores the five AfriSenti
    languages take 32 s instead of 54 s. Each result is what one process gives: a fit is a function
    of its language's texts, labels and the seed alone."""
    if jobs <= 1:
        return {lang: fit_language(s, classes, seed) for lang, s in splits.items()}
    from afrocomet.run.jobs import workers

    order = sorted(splits, key=lambda lang: -len(splits[lang]["train"][0]))
    died = "a process fitting the n-gram models died (killed, or out of memory?); --jobs 1 fits them in this one"
    with workers(jobs, 1, died) as pool:
        futures = {lang: pool.submit(fit_language, splits[lang], classes, seed) for lang in order}
        return {lang: futures[lang].result() for lang in splits}


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


def weight_scores(ctx: Context, logits: dict[str, np.ndarray], combined: NgramTeacher) -> dict[str, dict[str, float]]:
    """{language: {w: dev weighted F1 of the mixture's argmax}} over W_GRID, from the transformer's dev logits."""
    from sklearn.metrics import f1_score

    return {lang: {f"{w:g}": float(f1_score(ctx.data.dev[lang].labels, combined.mix(z, lang, "dev", w).argmax(-1),
                                            average="weighted", zero_division=0.0)) for w in W_GRID}
            for lang, z in logits.items()}


def with_soft_labels(data: RunData, combined: NgramTeacher) -> RunData:
    """The run's data with the n-gram model's out-of-fold probabilities on every training tweet
    (`Encoded.soft`, collated as `teacher_probs`) and its language's w (`Encoded.soft_weight`, collated
    as `teacher_weight`), in the order of `data.train` (languages concatenated)."""
    groups = list(dict.fromkeys(data.train.groups))
    soft = np.concatenate([combined.train_proba[lang] for lang in groups]).astype(np.float32)
    if len(soft) != len(data.train) or [g for g in data.train.groups] != [g for g in groups
                                                                          for _ in range(len(combined.train_proba[g]))]:
        raise RuntimeError("the n-gram model's training rows do not line up with the run's training data")
    weight = np.concatenate([np.full(len(combined.train_proba[lang]), combined.weights[lang], dtype=np.float32)
                             for lang in groups])
    if not ((weight >= 0) & (weight <= 1)).all():  # checked once here, not in the loss at every step
        raise InternalError(f"the combined teacher's weights must be in [0, 1], got {combined.weights}")
    return replace(data, train=replace(data.train, soft=soft, soft_weight=weight))
