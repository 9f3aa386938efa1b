"""The one training loop (distill/trainer.py) on tiny models and real AfriSenti tweets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import afrocomet.distill.losses as losses
from afrocomet.config import StageConfig
from afrocomet.data.afrisenti import read_tsv
from afrocomet.data.batching import Encoded, MLMMasker, encode
from afrocomet.data.schema import DEFAULT_LANGUAGES, LABELS
from afrocomet.distill.trainer import train_stage
from afrocomet.errors import AfroCometError
from afrocomet.models.build import build_model
from afrocomet.tokenizer import train_tokenizer

PER_LANGUAGE = 400  # 5 languages -> 2000 training tweets
VOCAB = 400
MAX_LENGTH = 48
COMMON = dict(batch_size=32, warmup_ratio=0.0, progress_every=1000)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok_data(afrisenti_dir):
    examples = [ex for lang in DEFAULT_LANGUAGES for ex in read_tsv(afrisenti_dir / lang / "train.tsv")[:PER_LANGUAGE]]
    texts = [ex.text for ex in examples]
    tok = train_tokenizer(texts, VOCAB)
    data = encode(tok, texts, MAX_LENGTH, labels=[LABELS.index(ex.label) for ex in examples])
    return tok, data


def stage(kind: str, **overrides) -> StageConfig:
    values = dict(COMMON, name=kind, kind=kind, max_steps=40, lr=3e-3)
    values.update(overrides)
    return StageConfig(**values)


def model(preset: str, task: str, tok, seed: int = 0, **config_overrides):
    if not config_overrides:
        return build_model(preset, task, vocab_size=len(tok), seed=seed)
    from afrocomet.models.presets import get_preset

    config = get_preset(preset).to_config(vocab_size=len(tok), **config_overrides)
    return build_model(config, task, seed=seed)


def with_head(mlm_model, task: str = "classification"):
    """The same encoder under a new head (what the pipeline does between stages 1 and 2)."""
    new = build_model(mlm_model.config, task, seed=123)
    missing, unexpected = new.base_model.load_state_dict(mlm_model.base_model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("pooler.") for k in missing)
    return new


def state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def read_log(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# -- the four stages end to end --------------------------------------------------------------------


@pytest.fixture(scope="module")
def four_stages(tok_data):
    """teacher-pretrain -> teacher-finetune -> stage 1 (distill-mlm) -> stage 2 (distill-task)."""
    tok, data = tok_data
    results, frozen = {}, {}
    teacher = model("tiny-teacher", "mlm", tok, seed=0)
    results["pretrain"] = train_stage(stage("teacher-pretrain"), teacher, data, tokenizer=tok, progress=False)
    teacher_cls = with_head(teacher)
    results["finetune"] = train_stage(stage("teacher-finetune", lr=1e-3), teacher_cls, data, tokenizer=tok,
                                      progress=False)
    student = model("tiny-student", "mlm", tok, seed=1)
    before = state(teacher)
    results["stage1"] = train_stage(stage("distill-mlm"), student, data, tokenizer=tok, teacher=teacher, progress=False)
    frozen["stage1"] = (teacher, before)
    student_cls = with_head(student)
    before = state(teacher_cls)
    results["stage2"] = train_stage(stage("distill-task", lr=1e-3), student_cls, data, tokenizer=tok,
                                    teacher=teacher_cls, progress=False)
    frozen["stage2"] = (teacher_cls, before)
    return results, frozen


@pytest.mark.parametrize("name,terms", [
    ("pretrain", {"hard"}), ("finetune", {"hard"}),
    ("stage1", {"hard", "kd", "attention"}), ("stage2", {"hard", "kd", "attention"}),
])
def test_every_stage_lowers_every_term(four_stages, name, terms):
    result = four_stages[0][name]
    assert result.steps == 40
    assert set(result.terms) == terms | {"total"}
    for term, values in result.terms.items():
        # mean of the last 10 steps below the mean of the first 10 by a clear margin; masked-LM
        # cross-entropy on 2000 tweets levels off near the unigram entropy (about -12% in 40 steps)
        factor = 0.93 if name in ("pretrain", "stage1") and term in ("hard", "total") else 0.75
        assert values["last"] < factor * values["first"], (name, term, values)


@pytest.mark.parametrize("name", ["stage1", "stage2"])
def test_teacher_gets_no_gradient_and_stays_in_eval_mode(four_stages, name):
    teacher, before = four_stages[1][name]
    assert not teacher.training
    assert all(not m.training for m in teacher.modules())
    for p in teacher.parameters():
        assert not p.requires_grad and p.grad is None
    assert same_state(state(teacher), before)  # not one bit of the teacher moved


# -- which terms exist -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tok_data):
    """200 tweets and a tiny teacher/student pair for the short runs below."""
    tok, data = tok_data
    return tok, data.subset(range(200))


@pytest.mark.parametrize("zero", ["kd_weight", "attention_weight", "hard_weight"])
def test_zero_weight_removes_the_term(small, tmp_path, zero):
    tok, data = small
    teacher = with_head(model("tiny-teacher", "mlm", tok))
    student = model("tiny-student", "classification", tok, seed=1)
    cfg = stage("distill-task", max_steps=3, **{zero: 0.0})
    result = train_stage(cfg, student, data, tokenizer=tok, teacher=teacher, out_dir=tmp_path, progress=False)
    term = zero.removesuffix("_weight")
    expected = {"kd", "attention", "hard"} - {term}
    assert set(result.terms) == expected | {"total"}
    records = read_log(tmp_path / "log.jsonl")
    assert len(records) == 3
    for record in records:
        assert term not in record
        assert expected <= set(record)


def test_every_weight_zero_is_an_error(small):
    tok, data = small
    cfg = stage("distill-task", kd_weight=0.0, attention_weight=0.0, hard_weight=0.0)
    teacher = with_head(model("tiny-teacher", "mlm", tok))
    with pytest.raises(AfroCometError, match="every loss weight is 0"):
        train_stage(cfg, model("tiny-student", "classification", tok), data, tokenizer=tok, teacher=teacher,
                    progress=False)


def test_distill_stage_without_teacher_is_an_error(small):
    tok, data = small
    with pytest.raises(AfroCometError, match="no teacher"):
        train_stage(stage("distill-mlm"), model("tiny-student", "mlm", tok), data, tokenizer=tok, progress=False)


def test_preflight_invariants_stop_a_broken_kd_before_the_first_step(small, monkeypatch, tmp_path):
    """The doctor's invariants run at the start of every distillation stage: a KD term that forgot T²
    is caught before any weight moves."""
    tok, data = small
    teacher = with_head(model("tiny-teacher", "mlm", tok))
    student = model("tiny-student", "classification", tok, seed=1)
    before = state(student)
    original = losses.kd_loss
    monkeypatch.setattr(losses, "kd_loss", lambda s, t, T, mask=None: original(s, t, T, mask) / T**2)
    with pytest.raises(AfroCometError, match="pre-flight invariant check failed: .*T"):
        train_stage(stage("distill-task", max_steps=3, temperature=2.0), student, data, tokenizer=tok,
                    teacher=teacher, out_dir=tmp_path, progress=False)
    assert same_state(before, state(student)) and not (tmp_path / "log.jsonl").exists()


# -- masked-LM KD sees masked positions only --------------------------------------------------------


def _without_preflight(monkeypatch):
    """Spies below count the loop's own loss calls; the pre-flight's are tested on their own."""
    import afrocomet.distill.trainer as trainer

    monkeypatch.setattr(trainer, "preflight_invariants", lambda *args, **kwargs: None)


def test_mlm_kd_only_at_masked_positions(small, monkeypatch):
    tok, data = small
    _without_preflight(monkeypatch)
    masked_counts, kd_shapes, seen_ids = [], [], []
    real_masker, real_kd = MLMMasker.__call__, losses.kd_loss

    def spy_masker(self, batch):
        out = real_masker(self, batch)
        masked_counts.append(int((out["mlm_labels"] != -100).sum()))
        seen_ids.append(out["input_ids"])
        return out

    def spy_kd(student_logits, teacher_logits, temperature, mask=None):
        kd_shapes.append((tuple(student_logits.shape), tuple(teacher_logits.shape)))
        return real_kd(student_logits, teacher_logits, temperature, mask)

    monkeypatch.setattr(MLMMasker, "__call__", spy_masker)
    monkeypatch.setattr(losses, "kd_loss", spy_kd)
    teacher = model("tiny-teacher", "mlm", tok)
    result = train_stage(stage("distill-mlm", max_steps=4), model("tiny-student", "mlm", tok, seed=1), data,
                         tokenizer=tok, teacher=teacher, progress=False)
    assert result.steps == 4 and len(kd_shapes) == len(masked_counts) == 4
    for n, (s_shape, t_shape), ids in zip(masked_counts, kd_shapes, seen_ids):
        assert 0 < n < ids.numel() // 4  # ~15% of the real tokens, far fewer than all positions
        assert s_shape == t_shape == (n, len(tok))


# -- determinism -----------------------------------------------------------------------------------


def run_stage1(tok, data, seed: int, evaluate=None):
    teacher = model("tiny-teacher", "mlm", tok)
    student = model("tiny-student", "mlm", tok, seed=1)
    cfg = stage("distill-mlm", max_steps=6, batch_size=16, eval_every=2, patience=0)
    train_stage(cfg, student, data, tokenizer=tok, teacher=teacher, seed=seed, evaluate=evaluate, progress=False)
    return state(student)


def test_same_seed_gives_bitwise_the_same_model(small):
    tok, data = small
    first, again = run_stage1(tok, data, seed=3), run_stage1(tok, data, seed=3)
    assert same_state(first, again)
    assert not same_state(first, run_stage1(tok, data, seed=4))  # the seed does matter


def test_an_evaluation_that_draws_random_numbers_changes_nothing(small):
    """Evaluation callbacks that consume the global RNG must not change the training run."""
    tok, data = small
    calls = []

    def noisy_evaluate(m):
        calls.append(1)
        torch.rand(1000)  # e.g. a dev sampler or an eval-time dropout
        return float(len(calls))  # improving: the final state is kept

    plain = run_stage1(tok, data, seed=3)
    assert same_state(plain, run_stage1(tok, data, seed=3, evaluate=noisy_evaluate))
    assert len(calls) == 3  # steps 2, 4, 6


# -- early stopping --------------------------------------------------------------------------------


def test_early_stopping_restores_the_best_state(small, tmp_path):
    tok, data = small
    student = model("tiny-student", "classification", tok, seed=1)
    scores = iter([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    snapshots = []

    def evaluate(m):
        snapshots.append(state(m))
        return next(scores)

    cfg = stage("student-finetune", max_steps=6, eval_every=1, patience=2)
    result = train_stage(cfg, student, data, tokenizer=tok, evaluate=evaluate, out_dir=tmp_path, progress=False)
    assert result.stopped_early and result.steps == 3 and len(snapshots) == 3
    assert result.best_step == 1 and result.best_score == pytest.approx(0.9)
    assert same_state(state(student), snapshots[0])
    assert not same_state(snapshots[0], snapshots[2])  # training did move the weights
    dev = [r["dev_score"] for r in read_log(tmp_path / "log.jsonl") if "dev_score" in r]
    assert dev == pytest.approx([0.9, 0.8, 0.7])


def test_no_early_stop_before_min_steps(small):
    tok, data = small
    cfg = stage("student-finetune", max_steps=8, eval_every=1, patience=2, min_steps=5)
    result = train_stage(cfg, model("tiny-student", "classification", tok), data, tokenizer=tok,
                         evaluate=lambda m: -1.0, progress=False)
    assert result.stopped_early and result.steps == 5 and result.best_step == 1  # patience ran out at step 3


def test_patience_zero_never_stops(small):
    tok, data = small
    cfg = stage("student-finetune", max_steps=5, eval_every=1, patience=0)
    result = train_stage(cfg, model("tiny-student", "classification", tok), data, tokenizer=tok,
                         evaluate=lambda m: -1.0, progress=False)
    assert result.steps == 5 and not result.stopped_early and result.best_step == 1


# -- gradient accumulation -------------------------------------------------------------------------


def spy_clip(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Record the gradients the optimiser is about to use (clip_grad_norm_ runs once per step)."""
    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(parameters, *args, **kwargs):
        parameters = list(parameters)
        seen.append([None if p.grad is None else p.grad.clone() for p in parameters])
        return real(parameters, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    return seen


def test_grad_accum_equals_one_big_batch(small, monkeypatch):
    """Class KD and gold-label CE are means over examples, so 2 x 8 accumulated == 1 x 16 (no dropout)."""
    tok, data = small
    data16 = data.subset(range(16))
    seen = spy_clip(monkeypatch)
    nodrop = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    for batch_size, grad_accum in ((16, 1), (8, 2)):
        teacher = with_head(model("tiny-teacher", "mlm", tok, **nodrop))
        student = model("tiny-student", "classification", tok, seed=1, **nodrop)
        cfg = stage("distill-task", attention_weight=0.0, batch_size=batch_size, grad_accum=grad_accum, epochs=1,
                    max_steps=None)
        result = train_stage(cfg, student, data16, tokenizer=tok, teacher=teacher, progress=False)
        assert result.steps == 1
    big, accumulated = seen
    assert len(big) == len(accumulated)
    for a, b in zip(big, accumulated):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_grad_accum_counts_optimizer_steps(small, monkeypatch):
    tok, data = small
    data40 = data.subset(range(40))  # 5 batches of 8 per epoch
    seen = spy_clip(monkeypatch)
    cfg = stage("student-finetune", batch_size=8, grad_accum=2, epochs=2, max_steps=None)
    result = train_stage(cfg, model("tiny-student", "classification", tok), data40, tokenizer=tok, progress=False)
    assert result.steps == len(seen) == 4  # 5 // 2 = 2 steps per epoch
    assert result.terms["hard"]["first"] > 0


# -- adaptive weights and the temperature schedule -------------------------------------------------


@pytest.mark.parametrize("mode", ["magnitude", "uncertainty"])
def test_adaptive_modes_run_and_log(small, tmp_path, mode):
    tok, data = small
    teacher = with_head(model("tiny-teacher", "mlm", tok))
    student = model("tiny-student", "classification", tok, seed=1)
    cfg = stage("distill-task", max_steps=5, adaptive=mode, kd_weight=1.0, attention_weight=2.0, hard_weight=0.5)
    result = train_stage(cfg, student, data, tokenizer=tok, teacher=teacher, out_dir=tmp_path, progress=False)
    records = read_log(tmp_path / "log.jsonl")
    assert len(records) == 5 and result.steps == 5
    for r in records:
        assert {"kd", "attention", "hard", "total"} <= set(r)
        assert all(torch.isfinite(torch.tensor(r[k])) for k in ("kd", "attention", "hard", "total"))
    first = records[0]
    if mode == "magnitude":  # each term divided by its own running size: total = sum of the weights
        assert first["total"] == pytest.approx(3.5, rel=1e-5)
    else:  # log-variances start at 0: total = sum of w * L
        expected = first["kd"] + 2.0 * first["attention"] + 0.5 * first["hard"]
        assert first["total"] == pytest.approx(expected, rel=1e-5)
        later = records[-1]
        plain = later["kd"] + 2.0 * later["attention"] + 0.5 * later["hard"]
        assert later["total"] != pytest.approx(plain, rel=1e-4)  # the log-variances have moved


def test_temperature_schedule_is_logged_and_used(small, tmp_path, monkeypatch):
    tok, data = small
    _without_preflight(monkeypatch)
    used = []
    real_kd = losses.kd_loss
    monkeypatch.setattr(losses, "kd_loss", lambda s, t, temperature, mask=None: (
        used.append(temperature), real_kd(s, t, temperature, mask))[1])
    teacher = with_head(model("tiny-teacher", "mlm", tok))
    cfg = stage("distill-task", max_steps=5, temperature=4.0, final_temperature=1.0)
    train_stage(cfg, model("tiny-student", "classification", tok), data, tokenizer=tok, teacher=teacher,
                out_dir=tmp_path, progress=False)
    logged = [r["temperature"] for r in read_log(tmp_path / "log.jsonl")]
    assert logged == pytest.approx([4.0, 3.25, 2.5, 1.75, 1.0])
    assert used == pytest.approx(logged)


def test_constant_temperature_without_final(small, tmp_path):
    tok, data = small
    teacher = with_head(model("tiny-teacher", "mlm", tok))
    cfg = stage("distill-task", max_steps=3, temperature=3.0)
    train_stage(cfg, model("tiny-student", "classification", tok), data, tokenizer=tok, teacher=teacher,
                out_dir=tmp_path, progress=False)
    assert [r["temperature"] for r in read_log(tmp_path / "log.jsonl")] == [3.0, 3.0, 3.0]


def test_empty_data_is_an_error(small):
    tok, _ = small
    with pytest.raises(AfroCometError, match="no training examples"):
        train_stage(stage("student-finetune"), model("tiny-student", "classification", tok), Encoded(ids=[], labels=[]),
                    tokenizer=tok, progress=False)


def test_mlm_masks_follow_their_own_seed_not_the_global_rng(small):
    tok, data = small
    from afrocomet.data.batching import collate

    batch = collate(data, range(16), tok.pad_token_id)
    torch.manual_seed(0)
    a = MLMMasker(tok, 0.15, seed=5)(batch)
    torch.manual_seed(1)
    b = MLMMasker(tok, 0.15, seed=5)(batch)
    c = MLMMasker(tok, 0.15, seed=6)(batch)
    assert torch.equal(a["mlm_labels"], b["mlm_labels"]) and torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["mlm_labels"], c["mlm_labels"])
