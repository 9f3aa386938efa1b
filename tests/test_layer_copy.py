"""Student initialisation by layer copy (models/layer_copy.py, `student_init: layers`), the
`--compare-init` variants and the width-of-e5 presets (issue 18, part 3)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from afrocomet.config import STUDENT_INITS, RunConfig, load_config
from afrocomet.errors import AfroCometError
from afrocomet.models.build import build_model, preset_parameters
from afrocomet.models.init import INIT_MODES
from afrocomet.models.student_init import compare_modes, initialise
from afrocomet.models.layer_copy import copy_layers
from afrocomet.models.presets import get_preset
from afrocomet.run import run_variants

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = 300
# tiny-teacher's shape (2 layers, hidden 64, 4 heads, FFN 128), as a BERT config: e5 is a BertModel
BERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, pad_token_id=1,
            max_position_embeddings=64, type_vocab_size=2)
IDS = torch.tensor([[0, 5, 6, 7, 8, 9, 2], [0, 10, 11, 2, 1, 1, 1]])  # right padding, as the run's batches
MASK = (IDS != 1).long()
TIGHT = dict(rtol=1e-5, atol=1e-5)


def student_like(teacher_config, vocab: int, task: str = "mlm", **overrides):
    """An XLM-R student (a preset's conventions) of the teacher's shape, random weights."""
    shape = dict(hidden_size=teacher_config.hidden_size, num_hidden_layers=teacher_config.num_hidden_layers,
                 num_attention_heads=teacher_config.num_attention_heads,
                 intermediate_size=teacher_config.intermediate_size)
    return build_model(get_preset("tiny-teacher").to_config(vocab_size=vocab, **{**shape, **overrides}), task, seed=1)


def outputs(model, **kw):
    with torch.no_grad():
        return model.eval()(input_ids=IDS, attention_mask=MASK, output_hidden_states=True, **kw)


def assert_same_states(student_out, teacher_out):
    """Every hidden state (embeddings, each layer) at the real tokens (padding: masked everywhere)."""
    real = MASK.bool()
    assert len(student_out.hidden_states) == len(teacher_out.hidden_states)
    for s, t in zip(student_out.hidden_states, teacher_out.hidden_states):
        torch.testing.assert_close(s[real], t[real], **TIGHT)


def test_every_layer_copied_gives_the_xlmr_teachers_outputs_exactly():
    teacher = build_model("tiny-teacher", "mlm", vocab_size=VOCAB, seed=0)
    student = student_like(teacher.config, VOCAB - 20)  # fewer rows: the tokenizer's, a teacher may have more
    report = copy_layers(student, teacher)
    assert report["layer_map"] == [(0, 0), (1, 1)] and report["lm_head"] and not report["pooler"]
    s, t = outputs(student), outputs(teacher)
    assert_same_states(s, t)
    torch.testing.assert_close(s.logits[MASK.bool()], t.logits[..., :VOCAB - 20][MASK.bool()], **TIGHT)
    assert student.lm_head.decoder.weight is student.roberta.embeddings.word_embeddings.weight  # still tied


@pytest.mark.parametrize("kind", ["mlm", "encoder", "pooled"])
def test_every_layer_copied_gives_the_bert_teachers_outputs_exactly(kind):
    """A BERT-family teacher (multilingual-e5 is a BertModel without pooler or head): position row p
    becomes the XLM-R student's row p + 2, LayerNorm epsilon 1e-12 is carried over."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB + 35, **BERT)  # e5: 250,037 rows for 250,002 pieces
    teacher = {"mlm": lambda: BertForMaskedLM(config), "encoder": lambda: BertModel(config, add_pooling_layer=False),
               "pooled": lambda: BertModel(config)}[kind]()
    student = student_like(config, VOCAB, "mlm" if kind != "pooled" else "base")
    assert student.config.layer_norm_eps == 1e-5 != config.layer_norm_eps
    report = copy_layers(student, teacher)
    assert report["lm_head"] == (kind == "mlm") and report["pooler"] == (kind == "pooled")
    assert report["positions"] == 64 and report["layer_norm_eps"] == config.layer_norm_eps
    assert student.config.layer_norm_eps == config.layer_norm_eps
    s, t = outputs(student), outputs(teacher)
    assert_same_states(s, t)
    if kind == "mlm":
        torch.testing.assert_close(s.logits[MASK.bool()], t.logits[..., :VOCAB][MASK.bool()], **TIGHT)
    if kind == "pooled":
        torch.testing.assert_close(s.pooler_output, t.pooler_output, **TIGHT)
    s_pos = student.roberta.embeddings.position_embeddings.weight if kind != "pooled" else \
        student.embeddings.position_embeddings.weight
    assert torch.equal(s_pos[2:66], teacher.base_model.embeddings.position_embeddings.weight)


def test_fewer_layers_take_every_kth_ending_at_the_last():
    teacher = build_model(get_preset("tiny-teacher").to_config(vocab_size=VOCAB, num_hidden_layers=6), "mlm", seed=0)
    student = student_like(teacher.config, VOCAB, num_hidden_layers=3)
    report = copy_layers(student, teacher)
    assert report["layer_map"] == [(0, 1), (1, 3), (2, 5)]  # every 2nd of 6 (uniform_layer_map)
    s_layers, t_layers = student.roberta.encoder.layer, teacher.roberta.encoder.layer
    for i, j in report["layer_map"]:
        t_state = t_layers[j].state_dict()
        assert all(torch.equal(v, t_state[k]) for k, v in s_layers[i].state_dict().items()), (i, j)
        others = [o for o in range(6) if o != j]  # and no other teacher layer's weights
        assert not any(torch.equal(s_layers[i].attention.self.query.weight, t_layers[o].attention.self.query.weight)
                       for o in others)
    twelve = build_model(get_preset("tiny-student").to_config(vocab_size=VOCAB, num_hidden_layers=12), "base", seed=0)
    assert copy_layers(student_like(twelve.config, VOCAB, "base", num_hidden_layers=3), twelve)["layer_map"] == [
        (0, 3), (1, 7), (2, 11)]  # e5's 12 -> comet-384-l3: every 4th


@pytest.mark.parametrize("overrides, needle", [
    ({"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 128}, "hidden size 32 != teacher's 64"),
    ({"num_attention_heads": 2}, "attention heads 2 != teacher's 4"),
    ({"intermediate_size": 256}, "feed-forward size 256 != teacher's 128"),
    ({"num_hidden_layers": 3}, "student has 3 layers, more than the teacher's 2"),
])
def test_a_student_of_another_shape_is_a_one_line_error(overrides, needle):
    teacher = build_model("tiny-teacher", "mlm", vocab_size=VOCAB, seed=0)
    student = student_like(teacher.config, VOCAB, **overrides)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(AfroCometError) as info:
        copy_layers(student, teacher)
    message = str(info.value)
    assert needle in message and "use student_init=teacher (PCA projection) or random" in message
    assert message.startswith("student_init=layers") and "\n" not in message
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())  # nothing half-copied
    with pytest.raises(AfroCometError, match="student_init=layers needs the teacher's vocabulary"):
        copy_layers(student_like(teacher.config, VOCAB + 1), teacher)


def test_initialise_names_the_mode():
    teacher = build_model("tiny-teacher", "mlm", vocab_size=VOCAB, seed=0)
    assert initialise(student_like(teacher.config, VOCAB), teacher, "layers")["mode"] == "layers"
    pca = initialise(student_like(teacher.config, VOCAB), teacher, "teacher")
    assert pca["mode"] == "teacher" and pca["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(AfroCometError, match="student_init=random does not initialise"):
        initialise(student_like(teacher.config, VOCAB), teacher, "random")


def test_config_accepts_layers_and_rejects_junk(tmp_path):
    assert STUDENT_INITS == INIT_MODES == ("random", "teacher", "layers")
    path = tmp_path / "run.yaml"
    stages = "stages:\n  - name: stage2\n"
    path.write_text("model:\n  student_init: layers\n" + stages, encoding="utf-8")
    assert load_config(path).model.student_init == "layers"
    path.write_text("model:\n  student_init: copy\n" + stages, encoding="utf-8")
    with pytest.raises(AfroCometError, match="student_init must be one of random, teacher, layers, got 'copy'"):
        load_config(path)


def test_compare_init_trains_every_other_mode_that_fits(tmp_path):
    config = RunConfig(ablations=False, compare_init=True)  # demo-student (64 wide) from demo-teacher (256)
    assert [v.system for v in run_variants(config)] == ["student", "student_teacher_init"]
    why = "student hidden size 64 != teacher's 256"
    assert compare_modes("random", "demo-student", "demo-teacher")["layers"] == why
    config.model.student_init = "teacher"
    assert [v.system for v in run_variants(config)] == ["student", "student_random_init"]

    folder = tmp_path / "bert-teacher"  # a folder teacher of tiny-student's shape: every mode fits
    BertModel(BertConfig(vocab_size=VOCAB, **{**BERT, "hidden_size": 32, "num_attention_heads": 2,
                                             "intermediate_size": 64})).save_pretrained(folder)
    config.model.teacher, config.model.student, config.model.student_init = str(folder), "tiny-student", "random"
    variants = run_variants(config)
    assert [v.system for v in variants] == ["student", "student_teacher_init", "student_layers_init"]
    assert [v.tag for v in variants[1:]] == ["[teacher_init]", "[layers_init]"]
    assert variants[-1].model == {"student_init": "layers"}
    config.model.student_init = "layers"
    assert [v.system for v in run_variants(config)] == ["student", "student_random_init", "student_teacher_init"]
    config.model.student = str(folder)  # a saved student keeps its own weights: nothing to compare
    assert [v.system for v in run_variants(config)] == ["student"]
    assert set(compare_modes("layers", str(folder), "tiny-teacher").values()) == {
        f"student {folder} is a saved model: its own weights are kept"}


@pytest.mark.parametrize("name, layers", [("comet-384", 6), ("comet-384-l3", 3), ("comet-384-l2", 2)])
def test_e5_width_presets_fit_layer_copy_from_e5(name, layers):
    preset = get_preset(name)
    e5 = BertConfig(vocab_size=250037, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512)  # intfloat/multilingual-e5-small
    assert preset.num_layers == layers and preset.max_length == 512
    assert compare_modes("random", name, "demo-teacher")["layers"] is not None
    from afrocomet.models.layer_copy import shape_problem

    assert shape_problem(preset.to_config(vocab_size=250002), e5) is None
    assert f"{preset_parameters(name):,} parameters" in preset.description


def test_new_student_copies_the_layers_and_notes_what_compare_init_skips(caplog):
    """run/students.new_student: a preset student of the teacher's shape starts as the teacher
    (student_init=layers), its report goes with the stage results; with compare_init, the modes that
    cannot apply are noted once (log line, ctx.preparation -> results.json "compare_init")."""
    import logging
    from types import SimpleNamespace

    from afrocomet.run.students import new_student

    caplog.set_level(logging.INFO, logger="afrocomet")
    teacher = build_model("tiny-teacher", "mlm", vocab_size=VOCAB, seed=0)
    config = RunConfig(ablations=False, compare_init=True)
    config.model.teacher, config.model.student, config.model.student_init = "tiny-teacher", "tiny-teacher", "layers"
    ctx = SimpleNamespace(config=config, data=SimpleNamespace(tokenizer=range(VOCAB)), preparation={}, results={},
                          vocab_keep=None)
    student = new_student(ctx, teacher, None, "", {}, seed=3)
    assert_same_states(outputs(student), outputs(teacher))
    assert ctx.results["student-init"]["mode"] == "layers" and ctx.results["student-init"]["kind"] == "student-init"
    assert ctx.preparation["compare_init"] == {"student_init": "layers", "compared": ["random", "teacher"],
                                               "skipped": {}}
    random = new_student(ctx, teacher, None, "[random_init]", {"student_init": "random"}, seed=3)
    assert not torch.equal(random.roberta.encoder.layer[0].attention.self.query.weight,
                           teacher.roberta.encoder.layer[0].attention.self.query.weight)
    assert "student-init[random_init]" not in ctx.results

    config.model.student, config.model.student_init = "tiny-student", "random"
    ctx = SimpleNamespace(config=config, data=SimpleNamespace(tokenizer=range(VOCAB)), preparation={}, results={},
                          vocab_keep=None)
    for tag, mode in (("", "random"), ("[teacher_init]", "teacher")):
        new_student(ctx, teacher, None, tag, {"student_init": mode}, seed=3)
    assert ctx.preparation["compare_init"]["skipped"] == {"layers": "student hidden size 32 != teacher's 64"}
    assert ctx.results["student-init[teacher_init]"]["mode"] == "teacher"
    assert caplog.text.count("compare_init: student_init=layers skipped (student hidden size 32 != teacher's 64)") == 1
