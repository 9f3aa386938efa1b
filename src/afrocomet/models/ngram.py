"""The character n-gram model: char 2-5-gram TF-IDF + logistic regression (scikit-learn).

It is two things in a run: the strongest simple baseline on AfriSenti (`tfidf_baseline`), and the
second half of the combined teacher (run/ngram_teacher.py), whose soft labels on the training tweets
must come from models that never saw them: `out_of_fold_proba` (k-fold cross-fitting). In-sample
probabilities of this model on its own training tweets are near one-hot memorisation (93.5-99.8
weighted F1 on train against 56.8-78.2 out of fold, measured on the five AfriSenti languages).

Character n-grams within word boundaries (2..5) cope with the rich morphology and the spelling
variation of tweets without any tokenizer. SAGA fits the ~38k tweets of all five training sets in a
few seconds, where lbfgs takes ten times longer for the same score; its tolerance 1e-3 (instead of
1e-4): 8 s instead of 22 s for the five languages on 2 cores, mean dev weighted F1 69.61 vs 69.63.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from afrocomet.errors import AfroCometError

C_GRID: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)  # the inverse regularisation strengths tried on dev
FOLDS = 5  # out-of-fold soft labels: each training tweet's from a model fit on the other 4/5


@dataclass
class NgramModel:
    """A fitted model; class ids are 0..num_classes-1 (the run's label ids). Features: the character
    n-gram counts of `counts` (a CountVectorizer), the columns `cols` (min_df 2 on the training rows),
    their TF-IDF (`idf`, sublinear tf, l2 rows), then the logistic regression."""

    counts: object
    cols: np.ndarray
    idf: object
    classifier: object
    num_classes: int

    def features(self, counts):
        """TF-IDF rows [n, features] (float32) from n-gram count rows of `self.counts`."""
        return self.idf.transform(counts[:, self.cols]).astype(np.float32)

    def proba_of_counts(self, counts) -> np.ndarray:
        """[n, num_classes] float32 from count rows; a class the training labels lacked gets probability 0."""
        out = np.zeros((counts.shape[0], self.num_classes), dtype=np.float32)
        if counts.shape[0]:
            out[:, [int(c) for c in self.classifier.classes_]] = self.classifier.predict_proba(self.features(counts))
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.proba_of_counts(self.counts.transform(list(texts)))

    def predict(self, texts: Sequence[str]) -> list:
        """Labels in the type they were given (ids or names)."""
        if len(texts) == 0:
            return []
        pred = self.classifier.predict(self.features(self.counts.transform(list(texts))))
        return [v.item() if isinstance(v, np.generic) else v for v in pred]


def _check(texts: Sequence, labels: Sequence) -> None:
    if len(texts) != len(labels):
        raise AfroCometError(f"{len(texts)} training texts but {len(labels)} labels")
    if len(set(labels)) < 2:
        raise AfroCometError("the char n-gram model needs at least two classes in the training labels")


def count_ngrams(texts: Sequence[str]):
    """(the fitted CountVectorizer, the texts' n-gram counts [n, grams] CSR). Each row is a function of its
    own text: models fit on any subset of the rows choose their own columns and IDF (`_fit_rows`)."""
    from sklearn.feature_extraction.text import CountVectorizer

    counts = CountVectorizer(analyzer="char_wb", ngram_range=(2, 5))
    return counts, counts.fit_transform(list(texts)).tocsr()


def _fit_rows(counts, rows, labels: Sequence, grid: Sequence[float], seed: int,
              num_classes: int) -> Iterator[tuple[float, NgramModel]]:
    """Models on count rows `rows` (what TfidfVectorizer(min_df=2, sublinear_tf) + LR would give on those
    texts, up to column order), one per C of `grid` (ascending, warm-started)."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    cols = np.flatnonzero(np.asarray((rows > 0).sum(axis=0)).ravel() >= 2)  # min_df=2 on these rows
    idf = TfidfTransformer(sublinear_tf=True).fit(rows[:, cols])
    x = idf.transform(rows[:, cols]).astype(np.float32)
    classifier = LogisticRegression(solver="saga", tol=1e-3, max_iter=1000, random_state=seed, warm_start=True)
    for C in sorted(grid):
        classifier.set_params(C=C).fit(x, list(labels))
        yield C, NgramModel(counts, cols, idf, copy.deepcopy(classifier), num_classes)


def fit_grid(texts: Sequence[str], labels: Sequence, grid: Sequence[float], seed: int,
             num_classes: int | None = None, counted=None) -> Iterator[tuple[float, NgramModel]]:
    """One model per C of `grid` on these texts (ascending C, each warm-started from the last).
    `num_classes`: the width of `predict_proba` (labels must then be ids 0..num_classes-1); `counted`:
    `count_ngrams(texts)` if already done."""
    _check(texts, labels)
    vectorizer, rows = counted or count_ngrams(texts)
    width = num_classes if num_classes is not None else len(set(labels))
    for C, model in _fit_rows(vectorizer, rows, labels, grid, seed, width):
        model.counts = vectorizer
        yield C, model


def fit(texts: Sequence[str], labels: Sequence, C: float, seed: int, num_classes: int | None = None) -> NgramModel:
    """The model at one C."""
    (_, model), = fit_grid(texts, labels, [C], seed, num_classes)
    return model


def select(train_texts: Sequence[str], train_labels: Sequence, dev_texts: Sequence[str], dev_labels: Sequence, *,
           seed: int = 0, grid: Sequence[float] = C_GRID, num_classes: int | None = None,
           counted=None) -> tuple[NgramModel, float, dict[float, float]]:
    """C chosen on dev: (the model at the best dev weighted F1, its C, dev weighted F1 per C); ties: the
    smaller C. `counted`: `count_ngrams(train_texts)` if already done."""
    from sklearn.metrics import f1_score

    if not grid:
        raise AfroCometError("the char n-gram model needs at least one C to choose from")
    scores: dict[float, float] = {}
    best: tuple[float, NgramModel] | None = None
    dev_counts = None
    for C, model in fit_grid(train_texts, train_labels, grid, seed, num_classes, counted):
        dev_counts = model.counts.transform(list(dev_texts)) if dev_counts is None else dev_counts
        pred = model.classifier.predict(model.features(dev_counts)) if len(dev_texts) else []
        scores[C] = float(f1_score(list(dev_labels), list(pred), average="weighted", zero_division=0.0))
        if best is None or scores[C] > scores[best[0]]:
            best = (C, model)
    return best[1], best[0], scores


def fold_ids(labels: Sequence[int], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each row: stratified by label, shuffled with `seed` (scikit-learn).
    Fewer rows of a class than `k` are allowed (those rows spread over the first folds)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    k = min(k, len(labels))
    out = np.empty(len(labels), dtype=np.int64)
    smallest = min(np.unique(labels, return_counts=True)[1])
    if smallest >= k:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
        for f, (_, held) in enumerate(splits):
            out[held] = f
        return out
    order = np.random.default_rng(seed).permutation(len(labels))  # a class too small to stratify
    out[order] = np.arange(len(labels)) % k
    return out


def out_of_fold_proba(texts: Sequence[str], labels: Sequence[int], num_classes: int, *, C: float, seed: int = 0,
                      k: int = FOLDS, counted=None) -> np.ndarray:
    """[n, num_classes] probabilities where row i comes from a model fit on the other folds only (k-fold
    cross-fitting): never from a classifier that saw row i, nor from a vocabulary (min_df) or IDF
    counted with it. The n-gram counts of each text (a function of that text alone: `count_ngrams`,
    or `counted`) are computed once; per fold the columns, their IDF and the classifier are fit on
    the fold's own rows: the model `fit` would give on them, up to column order."""
    if k < 2:
        raise AfroCometError(f"out-of-fold probabilities need at least 2 folds, got {k}")
    _check(texts, labels)
    vectorizer, counts = counted or count_ngrams(texts)
    labels = np.asarray(labels)
    folds = fold_ids(labels, k, seed)
    out = np.full((len(texts), num_classes), 1.0 / num_classes, dtype=np.float32)
    for f in np.unique(folds):
        held, seen = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        if len(set(labels[seen].tolist())) < 2:
            continue  # the other folds hold one class: uniform rather than a one-class fit
        (_, model), = _fit_rows(vectorizer, counts[seen], labels[seen].tolist(), [C], seed, num_classes)
        out[held] = model.proba_of_counts(counts[held])
    return out
