"""The combined teacher: the char n-gram model's out-of-fold probabilities, the mixture KD reads, and
the weight chosen on dev."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from afrocomet.config import StageConfig
from afrocomet.data.batching import Encoded, collate
from afrocomet.distill import losses as L
from afrocomet.errors import AfroCometError, InternalError
from afrocomet.models import ngram
from afrocomet.run.ngram_teacher import W_GRID, NgramTeacher


def random_label_texts(n: int = 300, seed: int = 0) -> tuple[list[str], list[int]]:
    """Texts of random letter strings with random labels: nothing to learn, everything to memorise."""
    rng = np.random.default_rng(seed)
    texts = [" ".join("".join(rng.choice(list("abcdefgh"), 4)) for _ in range(5)) for _ in range(n)]
    return texts, rng.integers(0, 3, n).tolist()


def test_out_of_fold_probabilities_never_come_from_a_model_that_saw_the_row():
    texts, labels = random_label_texts()
    in_sample = ngram.fit(texts, labels, 10.0, 0, 3).predict_proba(texts).argmax(-1)
    out_of_fold = ngram.out_of_fold_proba(texts, labels, 3, C=10.0).argmax(-1)
    # random labels: a model that saw a row recalls it (memorisation); one that did not is at chance
    assert (in_sample == np.array(labels)).mean() > 0.95
    assert (out_of_fold == np.array(labels)).mean() < 0.45


def test_each_fold_model_is_the_one_fit_would_give_on_the_other_folds(afrisenti_dir):
    from afrocomet.data.afrisenti import load_afrisenti

    ds = load_afrisenti(["swa"], afrisenti_dir)["swa"]
    texts, labels = ds.texts("train"), ds.label_ids("train")
    proba = ngram.out_of_fold_proba(texts, labels, 3, C=3.0, seed=0)
    folds = ngram.fold_ids(labels, ngram.FOLDS, 0)
    held, seen = np.flatnonzero(folds == 2), np.flatnonzero(folds != 2)
    ref = ngram.fit([texts[i] for i in seen], [labels[i] for i in seen], 3.0, 0, 3).predict_proba([texts[i] for i in held])
    np.testing.assert_allclose(proba[held], ref, atol=1e-4)
    np.testing.assert_allclose(proba.sum(-1), 1.0, atol=1e-5)


def test_folds_partition_the_rows_stratified_and_seeded():
    labels = [0] * 50 + [1] * 30 + [2] * 20
    folds = ngram.fold_ids(labels, 5, seed=3)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]
    for f in range(5):  # 10, 6 and 4 of each class in every fold
        assert [int(((folds == f) & (np.array(labels) == c)).sum()) for c in range(3)] == [10, 6, 4]
    assert (ngram.fold_ids(labels, 5, seed=3) == folds).all() and not (ngram.fold_ids(labels, 5, seed=4) == folds).all()
    tiny = ngram.fold_ids([0, 0, 0, 0, 0, 0, 1], 5, seed=0)  # a class smaller than k: still every row once
    assert len(tiny) == 7 and set(tiny.tolist()) == {0, 1, 2, 3, 4}
    with pytest.raises(AfroCometError, match="at least 2 folds"):
        ngram.out_of_fold_proba(["a b", "c d"], [0, 1], 2, C=1.0, k=1)


def test_a_class_missing_from_training_gets_probability_zero():
    texts, labels = random_label_texts(60)
    labels = [min(y, 1) for y in labels]  # classes 0 and 1 only, of 3
    proba = ngram.fit(texts, labels, 1.0, 0, num_classes=3).predict_proba(texts[:5])
    assert proba.shape == (5, 3) and (proba[:, 2] == 0).all()
    np.testing.assert_allclose(proba.sum(-1), 1.0, atol=1e-5)


def test_combined_logits_give_the_mixture_at_the_same_temperature():
    torch.manual_seed(0)
    z, q = torch.randn(6, 3), torch.softmax(torch.randn(6, 3), -1)
    for w, T in ((0.3, 2.0), (0.0, 1.0), (1.0, 4.0)):
        logits = L.combined_teacher_logits(z, q, w, T)
        by_hand = w * torch.softmax(z / T, -1) + (1 - w) * q
        torch.testing.assert_close(torch.softmax(logits / T, -1), by_hand, atol=1e-6, rtol=1e-5)
    with pytest.raises(InternalError, match="weight"):
        L.combined_teacher_logits(z, q, 1.5, 2.0)
    per_row = torch.tensor([[0.0], [0.2], [0.5], [0.5], [0.9], [1.0]])  # each row its language's w
    logits = L.combined_teacher_logits(z, q, per_row, 2.0)
    for i, w in enumerate(per_row[:, 0].tolist()):
        torch.testing.assert_close(logits[i], L.combined_teacher_logits(z[i:i + 1], q[i:i + 1], w, 2.0)[0])
    with pytest.raises(InternalError, match="per-row"):
        L.combined_teacher_logits(z, q, per_row[:3], 2.0)


def test_the_rows_weights_are_checked_once_where_the_rows_get_them():
    """Per-row weights are range-checked when the training rows are given them (with_soft_labels), so the
    loss reads no tensor on the host at every step; each row gets its language's w."""
    from afrocomet.run.inputs import RunData
    from afrocomet.run.ngram_teacher import NgramTeacher, with_soft_labels

    train = Encoded(ids=[[0, 5, 2]] * 3, labels=[0, 1, 2], groups=["hau", "hau", "swa"])
    proba = {"hau": np.full((2, 3), 1 / 3, dtype=np.float32), "swa": np.eye(3, dtype=np.float32)[:1]}
    data = RunData(datasets={}, tokenizer=None, train=train, dev={}, test={}, unlabelled=train)
    teacher = NgramTeacher({"hau": 0.3, "swa": 0.8}, 2.0, proba, {}, {})
    out = with_soft_labels(data, teacher).train
    np.testing.assert_allclose(out.soft_weight, [0.3, 0.3, 0.8])
    np.testing.assert_allclose(out.soft, np.concatenate([proba["hau"], proba["swa"]]))
    teacher.weights["swa"] = 1.5
    with pytest.raises(InternalError, match="weights must be in"):
        with_soft_labels(data, teacher)


def test_the_kd_term_reads_the_combined_teacher_when_the_stage_says_so():
    from afrocomet.distill.objective import HybridLoss
    from afrocomet.models.build import build_model
    from afrocomet.models.presets import get_preset

    student = build_model(get_preset("tiny-student"), "classification", vocab_size=1000, seed=0).eval()
    teacher = build_model(get_preset("tiny-teacher"), "classification", vocab_size=1000, seed=1).eval()
    q = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    data = Encoded(ids=[[0, 5, 6, 2], [0, 7, 2]], labels=[0, 2], soft=q.numpy())
    batch = collate(data, [0, 1], pad_id=1)
    torch.testing.assert_close(batch["teacher_probs"], q)
    T, w = 2.0, 0.4
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    p = w * torch.softmax(t / T, -1) + (1 - w) * q
    want = T * T * (p * (p.log() - torch.log_softmax(s / T, -1))).sum(-1).mean()
    cfg = StageConfig(kind="distill-task", attention_weight=0.0, hard_weight=0.0, teacher_mix=w)
    with torch.no_grad():
        got = HybridLoss(cfg, student, teacher).terms(student, teacher, batch, T)["kd"]
        paper = HybridLoss(StageConfig(kind="distill-task", attention_weight=0.0, hard_weight=0.0), student,
                           teacher).terms(student, teacher, batch, T)["kd"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert abs(float(paper) - float(got)) > 1e-3  # without teacher_mix: the transformer alone
    # rows of two languages, each at its own w (Encoded.soft_weight -> the batch's teacher_weight)
    weights = np.array([0.4, 0.9], dtype=np.float32)
    batch = collate(replace(data, soft_weight=weights), [0, 1], pad_id=1)
    torch.testing.assert_close(batch["teacher_weight"], torch.from_numpy(weights)[:, None])
    p = torch.from_numpy(weights)[:, None] * torch.softmax(t / T, -1) + (1 - torch.from_numpy(weights)[:, None]) * q
    want = T * T * (p * (p.log() - torch.log_softmax(s / T, -1))).sum(-1).mean()
    with torch.no_grad():
        got = HybridLoss(cfg, student, teacher).terms(student, teacher, batch, T)["kd"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_soft_labels_follow_subsets_and_concatenation():
    a = Encoded(ids=[[1], [2]], labels=[0, 1], groups=["x", "x"], soft=np.eye(3, dtype=np.float32)[:2])
    b = Encoded(ids=[[3]], labels=[2], groups=["y"], soft=np.eye(3, dtype=np.float32)[2:])
    both = Encoded.concat([a, b])
    assert both.soft.shape == (3, 3) and (both.soft.argmax(-1) == [0, 1, 2]).all()
    assert (both.subset([2, 0]).soft.argmax(-1) == [2, 0]).all()
    assert Encoded.concat([a, Encoded(ids=[[4]], labels=[0])]).soft is None  # not all parts have them
    a, b = replace(a, soft_weight=np.float32([0.3, 0.3])), replace(b, soft_weight=np.float32([0.8]))
    both = Encoded.concat([a, b])
    assert both.soft_weight.tolist() == pytest.approx([0.3, 0.3, 0.8])
    assert both.subset([2, 0]).soft_weight.tolist() == pytest.approx([0.8, 0.3])


def test_mix_and_record():
    dev = {"hau": np.array([[0.2, 0.3, 0.5]], dtype=np.float32), "swa": np.array([[0.6, 0.3, 0.1]], dtype=np.float32)}
    combined = NgramTeacher({"hau": 0.3, "swa": 0.7}, 2.0, {}, dev, dev,
                            weight_search={"hau": {"0.3": 0.6}, "swa": {"0.7": 0.5}})
    z = np.array([[2.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(combined.mix(z, "hau", "dev", 0.0), dev["hau"])
    soft = torch.softmax(torch.from_numpy(z) / 2.0, -1).numpy()
    np.testing.assert_allclose(combined.mix(z, "hau", "test"), 0.3 * soft + 0.7 * dev["hau"], rtol=1e-6)
    np.testing.assert_allclose(combined.mix(z, "swa", "test"), 0.7 * soft + 0.3 * dev["swa"], rtol=1e-6)  # its own w
    record = combined.record()
    assert record["weights"] == {"hau": 0.3, "swa": 0.7} and record["weight"] == 0.5 and combined.combines
    assert record["weight_grid"] == list(W_GRID) and record["folds"] == ngram.FOLDS
    assert W_GRID[0] == 0.0 and W_GRID[-1] == 1.0
    assert not NgramTeacher({"hau": 1.0}, 2.0, {}, dev, dev).combines  # the transformer alone everywhere


def test_each_language_gets_the_w_of_its_best_dev_score_ties_to_the_larger():
    from afrocomet.run.ngram_teacher import choose_weight

    assert choose_weight({"0": 0.60, "0.3": 0.66, "0.5": 0.64, "1": 0.55}) == 0.3
    assert choose_weight({"0": 0.60, "0.3": 0.66, "0.5": 0.66, "1": 0.55}) == 0.5  # a tie: nearer the transformer


def test_the_languages_fit_in_two_processes_as_in_one():
    from afrocomet.run.ngram_teacher import fit_languages

    splits = {}
    for lang, (n, seed) in {"small": (120, 1), "large": (300, 2), "mid": (200, 3)}.items():
        texts, labels = random_label_texts(n, seed)
        splits[lang] = {"train": (texts, labels), "dev": (texts[:40], labels[:40]), "test": (texts[40:80], labels[40:80])}
    one, two = fit_languages(splits, 3, 0, jobs=1), fit_languages(splits, 3, 0, jobs=2)
    assert list(two) == list(splits)  # the languages' order, whatever order they were fit in
    for lang in splits:
        assert two[lang]["selection"] == one[lang]["selection"] and two[lang]["oof_f1"] == one[lang]["oof_f1"]
        for split in ("train", "dev", "test"):
            np.testing.assert_array_equal(two[lang][split], one[lang][split])
