"""Tests for afrocomet.evaluate: metrics by hand, retention, baselines, ordered batched prediction."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from afrocomet.errors import AfroCometError
from afrocomet.evaluate import (
    average_metrics,
    compute_metrics,
    format_table,
    majority_baseline,
    predict_labels,
    predict_logits,
    predict_proba,
    retention,
    tfidf_baseline,
    tfidf_select,
)

from conftest import AFRISENTI_DIR as AFRISENTI
from helpers import WORDS, tiny_model, tiny_tokenizer



def read_rows(lang: str, split: str) -> tuple[list[str], list[str]]:
    with open(AFRISENTI / lang / f"{split}.tsv", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        rows = list(reader)
    return [r[0] for r in rows], [r[1] for r in rows]


# ------------------------------------------------------------------------------------------ metrics

# rows true / cols pred (negative, neutral, positive):
#   negative [3, 0, 1]   F1 = 0.75 (P 3/4, R 3/4)
#   neutral  [1, 1, 0]   F1 = 0.5  (P 1/2, R 1/2)
#   positive [0, 1, 3]   F1 = 0.75 (P 3/4, R 3/4)
Y_TRUE = ["negative"] * 4 + ["neutral"] * 2 + ["positive"] * 4
Y_PRED = ["negative", "negative", "negative", "positive", "neutral", "negative", "positive", "positive", "positive", "neutral"]


def test_metrics_match_hand_computation():
    m = compute_metrics(Y_TRUE, Y_PRED)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["per_class_f1"] == pytest.approx({"negative": 0.75, "neutral": 0.5, "positive": 0.75})
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["weighted_f1"] == pytest.approx((4 * 0.75 + 2 * 0.5 + 4 * 0.75) / 10)
    assert m["confusion_matrix"] == [[3, 0, 1], [1, 1, 0], [0, 1, 3]]
    assert m["support"] == {"negative": 4, "neutral": 2, "positive": 4}
    assert m["n"] == 10
    assert all(type(m[k]) is float for k in ("accuracy", "weighted_f1", "macro_f1"))


def test_metrics_accept_ids_and_match_official_scorer():
    index = {"negative": 0, "neutral": 1, "positive": 2}
    ids = compute_metrics([index[y] for y in Y_TRUE], [index[y] for y in Y_PRED])
    assert ids == compute_metrics(Y_TRUE, Y_PRED)
    rng = random.Random(1)
    t = [rng.randrange(3) for _ in range(200)]
    p = [rng.randrange(3) for _ in range(200)]
    assert compute_metrics(t, p)["weighted_f1"] == pytest.approx(f1_score(t, p, average="weighted"))


def test_metrics_absent_class_and_bad_input():
    m = compute_metrics(["negative", "positive", "positive"], ["negative", "positive", "negative"])
    assert m["per_class_f1"]["neutral"] == 0.0
    assert m["weighted_f1"] == pytest.approx((1 * (2 / 3) + 2 * (2 / 3)) / 3)
    assert m["confusion_matrix"][1] == [0, 0, 0]
    with pytest.raises(AfroCometError, match="2 gold labels but 1 predictions"):
        compute_metrics([0, 1], [0])
    with pytest.raises(AfroCometError, match="y_pred\\[1\\] = 'happy'"):
        compute_metrics(["negative", "neutral"], ["negative", "happy"])
    with pytest.raises(AfroCometError):
        compute_metrics([0, 3], [0, 1])


def test_average_and_retention():
    per_language = {
        "hau": {"accuracy": 0.8, "weighted_f1": 0.7, "macro_f1": 0.6, "n": 100},
        "swa": {"accuracy": 0.6, "weighted_f1": 0.5, "macro_f1": 0.2, "n": 5},
    }
    avg = average_metrics(per_language)
    assert avg == pytest.approx({"accuracy": 0.7, "weighted_f1": 0.6, "macro_f1": 0.4})  # unweighted by n
    r = retention({"accuracy": 0.6, "weighted_f1": 0.45, "macro_f1": 0.3}, {"accuracy": 0.8, "weighted_f1": 0.5, "macro_f1": 0.0})
    assert r["accuracy"] == pytest.approx(0.75)
    assert r["weighted_f1"] == pytest.approx(0.9)
    assert r["macro_f1"] is None
    with pytest.raises(AfroCometError, match="macro_f1"):
        average_metrics({"hau": {"accuracy": 1.0, "weighted_f1": 1.0}})


def test_format_table():
    table = format_table({"teacher": {"weighted_f1": 0.7, "accuracy": 0.75}, "student": {"weighted_f1": 0.6512, "note": "x"}})
    lines = table.strip().split("\n")
    assert lines[0] == "| system | weighted_f1 | accuracy |"
    assert lines[2] == "| teacher | 70.00 | 75.00 |"
    assert lines[3] == "| student | 65.12 | - |"
    raw = format_table({"a": {"ratio": 2.5}}, percent=False, digits=1)
    assert "| a | 2.5 |" in raw


# ---------------------------------------------------------------------------------------- baselines


def test_majority_baseline():
    assert majority_baseline(["neutral", "positive", "positive", "negative"], 3) == ["positive"] * 3
    assert majority_baseline(["positive", "negative"], 2) == ["negative", "negative"]  # tie: smallest label
    assert majority_baseline([2, 0, 2], 1) == [2]
    with pytest.raises(AfroCometError):
        majority_baseline([], 3)


def test_tfidf_beats_majority_on_hausa(afrisenti_dir):  # the fixture skips (fails in CI) without the data
    train_x, train_y = read_rows("hau", "train")
    dev_x, dev_y = read_rows("hau", "dev")
    rng = random.Random(0)  # the files are sorted by label: sample rows, never take a prefix
    picked = rng.sample(range(len(train_x)), 3000)
    train_x, train_y = [train_x[i] for i in picked], [train_y[i] for i in picked]
    picked = rng.sample(range(len(dev_x)), 1000)
    dev_x, dev_y = [dev_x[i] for i in picked], [dev_y[i] for i in picked]
    assert len(set(dev_y)) == 3
    tfidf = compute_metrics(dev_y, tfidf_baseline(train_x, train_y, dev_x))
    majority = compute_metrics(dev_y, majority_baseline(train_y, len(dev_x)))
    assert majority["weighted_f1"] < 0.35
    assert tfidf["weighted_f1"] > majority["weighted_f1"] + 0.25
    assert tfidf["accuracy"] > 0.6


def test_tfidf_baseline_rejects_bad_input():
    with pytest.raises(AfroCometError, match="two classes"):
        tfidf_baseline(["a b", "b c"], ["positive", "positive"], ["a"])
    with pytest.raises(AfroCometError, match="2 training texts but 1 labels"):
        tfidf_baseline(["a b", "b c"], ["positive"], ["a"])


def test_tfidf_select_chooses_c_on_dev():
    """Issue 13 item 7: C is chosen on dev (the best dev weighted F1 of the grid), and the test
    predictions are the chosen classifier's, the same as a fixed-C fit at that C."""
    rng = random.Random(0)
    def rows(n):  # the label is carried by one word among noise; a few labels are flipped
        out = []
        for _ in range(n):
            y = rng.randrange(3)
            words = rng.choices(WORDS, k=6) + [("dadi", "banza", "lafiya")[y]]
            out.append((" ".join(rng.sample(words, len(words))), y if rng.random() > 0.2 else rng.randrange(3)))
        return [t for t, _ in out], [y for _, y in out]
    (train_x, train_y), (dev_x, dev_y), (test_x, _) = rows(300), rows(120), rows(50)
    pred, C, scores = tfidf_select(train_x, train_y, dev_x, dev_y, test_x, grid=(0.01, 1.0, 10.0))
    assert list(scores) == [0.01, 1.0, 10.0] and C == max(scores, key=scores.get)
    assert scores[0.01] < scores[C]  # the grid matters: a tiny C underfits
    for c in scores:  # each score is that C's dev weighted F1
        fixed = tfidf_baseline(train_x, train_y, dev_x, C=c)
        assert scores[c] == pytest.approx(f1_score(dev_y, fixed, average="weighted"), abs=1e-9)
    assert pred == tfidf_baseline(train_x, train_y, test_x, C=C)
    with pytest.raises(AfroCometError, match="at least one C"):
        tfidf_select(train_x, train_y, dev_x, dev_y, test_x, grid=())


# ---------------------------------------------------------------------------------------- predictions


def test_predict_keeps_order_and_counts_truncation():
    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer))
    rng = random.Random(3)
    texts = [" ".join(rng.choice(WORDS) for _ in range(n)) for n in (3, 9, 1, 12, 5, 2, 7, 6, 4, 10)]
    max_length = 8  # <s> + 6 words + </s>: the texts of 7, 9, 10 and 12 words are cut, 6 is not
    expected_truncated = sum(len(t.split()) + 2 > max_length for t in texts)
    assert expected_truncated == 4

    model.train()  # predict must switch to eval (no dropout) and switch back
    logits, n_truncated = predict_logits(model, tokenizer, texts, batch_size=4, max_length=max_length)
    assert model.training
    assert n_truncated == expected_truncated
    assert logits.shape == (len(texts), 3) and logits.dtype == np.float32

    model.eval()
    with torch.inference_mode():  # one text at a time: no padding, no reordering
        reference = np.concatenate([
            model(**tokenizer([t], truncation=True, max_length=max_length, return_tensors="pt")).logits.numpy() for t in texts
        ])
    np.testing.assert_allclose(logits, reference, atol=1e-5)
    labels, n = predict_labels(model, tokenizer, texts, batch_size=3, max_length=max_length)
    assert labels == reference.argmax(-1).tolist() and n == expected_truncated
    proba, _ = predict_proba(model, tokenizer, texts, batch_size=64, max_length=max_length)
    np.testing.assert_allclose(proba.sum(-1), 1.0, atol=1e-6)
    assert predict_labels(model, tokenizer, []) == ([], 0)
