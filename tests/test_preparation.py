"""Teacher preparation for a pretrained teacher on a CPU: frozen parts, budgets, the teacher against
the majority, the time estimate's timing, tokenizer coverage and the NFD normalisation."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from afrocomet.data.batching import Encoded
from afrocomet.data.schema import Dataset, Example
from afrocomet.errors import AfroCometError

SIZES = dict(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
             num_labels=3, pad_token_id=1)


def _bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**SIZES))


def test_freeze_teacher_embeddings_and_lower_layers():
    from afrocomet.run.teacher import freeze_teacher

    model = _bert()
    total = sum(p.numel() for p in model.parameters())
    out = freeze_teacher(model, embeddings=True, layers=2)
    assert not any(p.requires_grad for p in model.bert.embeddings.parameters())
    assert not any(p.requires_grad for layer in model.bert.encoder.layer[:2] for p in layer.parameters())
    assert all(p.requires_grad for p in model.bert.encoder.layer[2].parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert out["parameters"] == total and out["of_layers"] == 3 and out["layers"] == 2
    assert out["trainable_parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad) < total
    # more layers than the teacher has: all frozen, only the pooler and head train
    model = _bert()
    assert freeze_teacher(model, embeddings=False, layers=9)["layers"] == 3
    assert [n for n, p in model.named_parameters() if p.requires_grad and "encoder" in n] == []


def test_time_step_leaves_no_gradient_and_keeps_the_mode():
    from afrocomet.run.estimate import time_step

    model = _bert().eval()
    assert time_step(model, 4, 8, backward=True) > 0
    assert time_step(model, 4, 8, backward=False) > 0
    assert all(p.grad is None for p in model.parameters()) and not model.training


def _ctx(dev_labels: list[int], train_labels: list[int]):
    labels = ("positive", "neutral", "negative")
    train = [Example(f"t{i}", labels[y], None, "train.tsv", i + 2) for i, y in enumerate(train_labels)]
    ds = Dataset("hau", {"train": train, "dev": [], "test": []}, labels)
    dev = Encoded(ids=[[0, 5, 6, 2] for _ in dev_labels], labels=list(dev_labels), groups=["hau"] * len(dev_labels))
    return SimpleNamespace(data=SimpleNamespace(dev={"hau": dev}, datasets={"hau": ds}), pad_id=1, device="cpu")


def _constant(label: int) -> BertForSequenceClassification:
    model = _bert().eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0]).index_fill_(0, torch.tensor([label]), 5.0))
    return model


def test_a_teacher_no_better_than_the_majority_is_flagged_loudly():
    from afrocomet.quiet import AfroCometWarning
    from afrocomet.run.teacher import check_teacher

    ctx = _ctx(dev_labels=[0, 0, 0, 1], train_labels=[0, 0, 1])  # majority: label 0
    with pytest.warns(AfroCometWarning, match="no better than the majority baseline"):
        out = check_teacher(ctx, _constant(0))  # a constant teacher = the majority
    assert out["below_majority"] and out["teacher"] == out["majority"]
    ctx = _ctx(dev_labels=[1, 1, 1, 0], train_labels=[0, 0, 1])  # majority label 0, but dev is mostly 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = check_teacher(ctx, _constant(1))
    assert not out["below_majority"] and out["teacher"] > out["majority"]
    assert set(out["per_language"]["hau"]) == {"teacher", "majority"}


def test_pretrained_budgets_suit_a_pretrained_teacher_and_the_built_in_default_is_unchanged():
    from afrocomet.run.budgets import default_config

    for quick in (False, True):
        config = default_config(quick=quick, teacher="some/folder")
        finetune = next(s for s in config.stages if s.kind == "teacher-finetune")
        assert 2e-5 <= finetune.lr <= 1e-4
        assert config.model.trim_vocab and config.model.freeze_teacher_embeddings
        assert config.data.max_length == 64
    quick = default_config(quick=True, teacher="some/folder")
    assert quick.model.freeze_teacher_layers == 6 and all(s.max_steps and s.max_steps <= 80 for s in quick.stages)
    # the built-in default (budgets chosen on dev to fit 15 minutes: budgets.default_stages)
    builtin = default_config()
    assert [(s.kind, s.max_steps, s.epochs, s.batch_size, s.lr) for s in builtin.stages] == [
        ("teacher-pretrain", 100, 1.0, 64, 5e-4), ("teacher-finetune", 800, 2.5, 32, 3e-4),
        ("distill-mlm", 150, 1.0, 64, 1e-3), ("distill-task", None, 1.0, 32, 1e-3)]
    assert builtin.data.alpha_candidates == [] and builtin.data.sampling_alpha == 0.5
    assert builtin.lr_factors == [1.0, 3.0]
    # a pretrained teacher and a config of one's own keep the searches
    assert default_config(teacher="some/folder").lr_factors == [1 / 3, 1.0, 3.0]
    assert default_config(teacher="some/folder").data.alpha_candidates == [0.3, 0.5, 1.0]
    assert builtin.data.max_length == 128 and builtin.data.normalize == "none"
    assert not builtin.model.trim_vocab and not builtin.model.freeze_teacher_embeddings
    assert builtin.model.freeze_teacher_layers == 0
    q = default_config(quick=True)
    assert [(s.kind, s.max_steps, s.lr) for s in q.stages] == [
        ("teacher-pretrain", 12, 2e-3), ("teacher-finetune", 12, 2e-3), ("distill-mlm", 12, 2e-3),
        ("distill-task", 12, 2e-3)]


def test_config_checks_the_new_fields():
    from afrocomet.config import from_dict

    with pytest.raises(AfroCometError, match="data.normalize"):
        from_dict({"data": {"normalize": "nfc"}})
    with pytest.raises(AfroCometError, match="freeze_teacher_layers"):
        from_dict({"model": {"freeze_teacher_layers": -1}})
    config = from_dict({"data": {"normalize": "nfd-unknown"}, "model": {"freeze_teacher_layers": 4}})
    assert config.data.normalize == "nfd-unknown" and config.model.freeze_teacher_layers == 4


# ----------------------------------------------------------------------------- coverage and normalisation

# A tokenizer whose text has `x` + U+0300 (no precomposed form: NFKC keeps it decomposed), so the
# pieces `n`, U+0300 exist but no piece `ǹ` (U+01F9), like XLM-R's vocabulary.
TRAIN = ["nana x\u0300 ma\u0301ma", "kan nkan x\u0300x\u0300", "mama nana kan"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    from afrocomet.tokenizer import train_tokenizer

    return train_tokenizer(TRAIN, vocab_size=40)


def test_nfd_rules_keep_letters_that_fall_to_unk(tokenizer, tmp_path):
    from afrocomet.normalize import coverage, nfd_rules, unknown_rate
    from afrocomet.tokenizer import load_tokenizer, write_tokenizer

    yor = ["\u01f9kan nana", "mama \u01f9", "a\u031f kan"]  # ǹ decomposes to pieces; U+031F has none
    assert nfd_rules(tokenizer, yor) == {"\u01f9": "n\u0300"}
    before = unknown_rate(tokenizer, yor)
    assert before["unk"] == 3 and before["texts_with_unk"] == 3
    normalised, report = coverage(tokenizer, {"yor": yor}, "nfd-unknown")
    assert report["per_language"]["yor"] == before
    after = report["per_language_normalized"]["yor"]
    assert after["unk"] == 1 and after["texts_with_unk"] == 1  # only U+031F is left
    assert report["rules"] == {"U+01F9 \u01f9": "U+006E + U+0300"}
    assert len(normalised) == len(tokenizer) and normalised.mask_token_id == tokenizer.mask_token_id
    assert normalised("nana kan")["input_ids"] == tokenizer("nana kan")["input_ids"]  # other text: the same ids
    write_tokenizer(normalised, tmp_path)  # the rule travels with the saved folder (predict, pipeline)
    reloaded = load_tokenizer(tmp_path)
    assert reloaded(yor)["input_ids"] == normalised(yor)["input_ids"]
    assert tokenizer.unk_token_id not in reloaded(yor[0])["input_ids"]


def test_coverage_without_normalisation_only_measures(tokenizer):
    from afrocomet.normalize import coverage

    same, report = coverage(tokenizer, {"yor": ["\u01f9 kan"], "hau": ["nana"]})
    assert same is tokenizer and report["normalize"] == "none" and "rules" not in report
    assert report["per_language"]["hau"]["unk_rate"] == 0.0 and report["per_language"]["yor"]["unk"] == 1


def test_dev_logits_are_read_back_while_the_weights_and_dev_sets_are_the_same():
    """The fine-tuned teacher's last dev evaluation (its best, kept) is what the majority check and the
    choice of w read next: not another pass, unless a weight or a dev example changed."""
    from afrocomet.run.dev import dev_f1, dev_logits

    model, ctx = _bert(), _ctx(dev_labels=[0, 1, 2, 1], train_labels=[0, 1])
    dev_f1(ctx.data.dev, 1, "cpu", keep=True)(model)  # the teacher-finetune stage's dev evaluation
    first = dev_logits(model, ctx.data.dev, 1, "cpu")
    assert dev_logits(_bert(), {"hau": Encoded(**vars(ctx.data.dev["hau"]))}, 1, "cpu") is first  # equal inputs
    with torch.no_grad():
        model.classifier.bias[0] += 1.0
    changed = dev_logits(model, ctx.data.dev, 1, "cpu")
    assert changed is not first and (changed["hau"][:, 0] - first["hau"][:, 0] > 0.99).all()
    other_dev = {"hau": Encoded(ids=[[0, 7, 2]] * 4, labels=[0, 1, 2, 1], groups=["hau"] * 4)}
    assert dev_logits(model, other_dev, 1, "cpu")["hau"].shape == (4, 3)
    assert dev_logits(model, ctx.data.dev, 1, "cpu") is not changed  # recomputed: only the latest is kept
