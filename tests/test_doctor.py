"""Pre-flight checks: memory estimate, KD invariants, overfit test, run_doctor (distill/memory, invariants, doctor)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import afrocomet.distill.doctor as doctor
import afrocomet.distill.invariants as invariants
import afrocomet.distill.losses as losses
import afrocomet.distill.matching as matching
import afrocomet.distill.memory as memory
import afrocomet.models.attention as attention
from afrocomet.config import DataConfig, ModelConfig, RunConfig, StageConfig
from afrocomet.data.afrisenti import read_tsv
from afrocomet.data.batching import collate, encode
from afrocomet.data.schema import LABELS
from afrocomet.distill.trainer import train_stage
from afrocomet.errors import AfroCometError
from afrocomet.models.build import build_model
from afrocomet.models.presets import get_preset
from afrocomet.tokenizer import train_tokenizer

LANGUAGES = ["hau", "yor"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok_data(afrisenti_dir):
    examples = [ex for lang in LANGUAGES for ex in read_tsv(afrisenti_dir / lang / "train.tsv")[:300]]
    tok = train_tokenizer([ex.text for ex in examples], 400)
    data = encode(tok, [ex.text for ex in examples], 48, labels=[LABELS.index(ex.label) for ex in examples])
    return tok, data


def models(tok, kind: str):
    task = "mlm" if kind == "distill-mlm" else "classification"
    student = build_model("tiny-student", task, vocab_size=len(tok), seed=1)
    teacher = build_model("tiny-teacher", task, vocab_size=len(tok), seed=0).eval().requires_grad_(False)
    return student, teacher


def checks_for(tok, data, kind="distill-task", matching_mode="mean", teacher_mode=None, **stage):
    student, teacher = models(tok, kind)
    if teacher_mode == "train":
        teacher.train()
    cfg = StageConfig(name="s", kind=kind, matching=matching_mode, **stage)
    batch = collate(data, range(8), tok.pad_token_id)
    return {c.name: c for c in invariants.check_invariants(student, teacher, tok, cfg, batch)}


# -- memory ------------------------------------------------------------------------------------------


def paper_estimate(**stage):
    cfg = StageConfig(kind="distill-mlm", **{"batch_size": 8, **stage})
    return memory.estimate_memory(get_preset("comet").to_config(), get_preset("afroxlmr-large").to_config(), cfg, 128)


def test_estimate_counts_the_paper_models():
    est = paper_estimate()
    assert est["teacher_weights"] == 4 * 560_142_482  # XLMRobertaForMaskedLM, decoder tied
    assert est["student_states"] == 16 * 69_187_730  # weights + grads + AdamW moments, fp32
    assert est["total"] < sum(v for k, v in est.items() if k.endswith(("states", "weights", "activations", "maps",
                                                                         "logits", "step")))  # a max, not a sum
    assert est["available"] is None or est["fits"] == (est["total"] <= est["available"])


def test_estimate_scales_as_it_should():
    base, double_batch = paper_estimate(), paper_estimate(batch_size=16)
    assert double_batch["student_activations"] == pytest.approx(2 * base["student_activations"], rel=0.01)
    assert double_batch["attention_maps"] == 2 * base["attention_maps"]
    # masked-LM logits: only at masked positions, so proportional to the masking rate
    assert paper_estimate(mlm_probability=0.3)["logits"] == pytest.approx(2 * base["logits"], rel=0.01)
    assert paper_estimate(attention_weight=0.0)["attention_maps"] == 0
    long = memory.estimate_memory(get_preset("comet").to_config(), get_preset("afroxlmr-large").to_config(),
                                  StageConfig(kind="distill-mlm", batch_size=8), 256)
    assert long["attention_maps"] == 4 * base["attention_maps"]  # b·s² maps
    no_teacher = memory.estimate_memory(get_preset("comet").to_config(), None, StageConfig(kind="distill-mlm"), 128)
    assert no_teacher["teacher_weights"] == no_teacher["attention_maps"] == 0


def test_train_stage_stops_before_a_step_that_cannot_fit(tok_data, monkeypatch):
    tok, data = tok_data
    student, teacher = models(tok, "distill-task")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 1000)
    with pytest.raises(AfroCometError, match="needs about .* lower batch_size") as info:
        train_stage(StageConfig(kind="distill-task", max_steps=2), student, data, tokenizer=tok, teacher=teacher,
                    progress=False)
    assert "\n" not in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())


# -- invariants --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["distill-mlm", "distill-task"])
@pytest.mark.parametrize("matching_mode", ["mean", "projection", "relations"])
def test_all_invariants_hold(tok_data, kind, matching_mode):
    found = checks_for(*tok_data, kind=kind, matching_mode=matching_mode)
    assert set(found) == {"teacher frozen, eval mode", "kd = T²·KL", "padding masked", "attention maps",
                          "gradient per term"}
    assert all(c.ok for c in found.values()), [c for c in found.values() if not c.ok]


def test_checks_follow_the_weights(tok_data):
    found = checks_for(*tok_data, kd_weight=0.0, attention_weight=0.0)
    assert set(found) == {"teacher frozen, eval mode", "padding masked", "gradient per term"}
    assert "kd" not in found["gradient per term"].detail


def test_teacher_in_train_mode_fails(tok_data):
    found = checks_for(*tok_data, teacher_mode="train")
    assert not found["teacher frozen, eval mode"].ok
    assert "train mode" in found["teacher frozen, eval mode"].detail
    assert found["gradient per term"].ok


def test_kd_without_t_squared_fails(tok_data, monkeypatch):
    real = losses.kd_loss
    monkeypatch.setattr(losses, "kd_loss", lambda s, t, T, mask=None: real(s, t, T, mask) / T**2)
    found = checks_for(*tok_data, kind="distill-mlm")
    assert not found["kd = T²·KL"].ok and "T² missing" in found["kd = T²·KL"].detail
    assert found["padding masked"].ok


def test_kd_averaged_over_classes_fails(tok_data, monkeypatch):
    def mean_kd(s, t, T, mask=None):  # KL averaged over rows *and* classes ("mean" instead of "batchmean")
        kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="sum")
        return kl / s.numel() * T**2

    monkeypatch.setattr(losses, "kd_loss", mean_kd)
    found = checks_for(*tok_data)
    assert not found["kd = T²·KL"].ok and "'mean' instead of 'batchmean'" in found["kd = T²·KL"].detail


def test_attention_loss_that_ignores_padding_fails(tok_data, monkeypatch):
    real = matching.attention_kl
    monkeypatch.setattr(matching, "attention_kl", lambda s, t, mask, eps=1e-8: real(s, t, torch.ones_like(mask)))
    found = checks_for(*tok_data)
    assert not found["padding masked"].ok and "attention" in found["padding masked"].detail
    assert "kd" not in found["padding masked"].detail  # the other terms still mask


def test_maps_touched_by_dropout_fail(tok_data, monkeypatch):
    real = attention.attention_probs
    monkeypatch.setattr(attention, "attention_probs",
                        lambda q, k, mask, scaling: F.dropout(real(q, k, mask, scaling), p=0.2, training=True))
    found = checks_for(*tok_data)
    assert not found["attention maps"].ok and "sum to 1" in found["attention maps"].detail


def test_term_without_gradient_fails(tok_data, monkeypatch):
    real = losses.hard_label_loss
    monkeypatch.setattr(losses, "hard_label_loss", lambda *a, **k: real(*a, **k).detach().requires_grad_())
    found = checks_for(*tok_data)
    assert not found["gradient per term"].ok
    assert "hard gives the student no" in found["gradient per term"].detail


# -- overfit -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["distill-mlm", "distill-task"])
def test_overfit_passes_and_the_teacher_is_untouched(tok_data, kind):
    tok, data = tok_data
    student, teacher = models(tok, kind)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    found = {c.name: c for c in doctor.overfit_check(student, teacher, tok, StageConfig(kind=kind), data)}
    assert found["overfit 2 batches"].ok, found["overfit 2 batches"].detail
    assert found["teacher untouched by the loop"].ok
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())  # trained a copy


def test_overfit_fails_when_the_optimiser_does_nothing(tok_data, monkeypatch):
    tok, data = tok_data
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    student, teacher = models(tok, "distill-task")
    found = {c.name: c for c in doctor.overfit_check(student, teacher, tok, StageConfig(kind="distill-task"), data)}
    assert not found["overfit 2 batches"].ok and "+0%" in found["overfit 2 batches"].detail


# -- a whole config ----------------------------------------------------------------------------------


def tiny_config(afrisenti_dir, **stage_overrides) -> RunConfig:
    common = {"batch_size": 16, **stage_overrides}
    return RunConfig(
        data=DataConfig(languages=LANGUAGES, data_dir=str(afrisenti_dir), download=False, max_length=48),
        model=ModelConfig(teacher="tiny-teacher", student="tiny-student", vocab_size=400),
        stages=[StageConfig(name="pretrain", kind="teacher-pretrain", **common),
                StageConfig(name="finetune", kind="teacher-finetune", **common),
                StageConfig(name="stage1", kind="distill-mlm", **common),
                StageConfig(name="stage2", kind="distill-task", matching="relations", layer_map=[[0, 1]], **common)],
    )


def test_run_doctor_passes_on_tiny_presets(afrisenti_dir):
    checks = doctor.run_doctor(tiny_config(afrisenti_dir), sample=600)
    assert all(c.ok for c in checks), doctor.format_checks(checks)
    by_stage = {}
    for c in checks:
        by_stage.setdefault(c.stage, []).append(c.name)
    assert by_stage["pretrain"] == by_stage["finetune"] == ["memory"]
    for name in ("stage1", "stage2"):
        assert by_stage[name] == ["memory", "teacher frozen, eval mode", "kd = T²·KL", "padding masked",
                                  "attention maps", "gradient per term", "overfit 2 batches",
                                  "teacher untouched by the loop"]
    table = doctor.format_checks(checks)
    assert table.splitlines()[0].split() == ["stage", "check", "result", "detail"]
    assert len(table.splitlines()) == len(checks) + 1
    json.dumps([c.to_dict() for c in checks])


def test_run_doctor_refuses_what_cannot_fit(afrisenti_dir, monkeypatch):
    # the largest batch the config accepts, on a machine with 64 MiB free
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 64 * 2**20)
    with pytest.raises(AfroCometError, match="stage 'pretrain' needs about") as info:
        doctor.run_doctor(tiny_config(afrisenti_dir, batch_size=65536), sample=100)
    assert "\n" not in str(info.value)


def test_format_checks_shows_failures():
    table = doctor.format_checks([invariants.Check("a", True, "fine", "s1"), invariants.Check("b", False, "broken", "s1")])
    assert "FAIL" in table.splitlines()[2] and "broken" in table
