"""Model presets, building and loading (tiny models only; big ones are counted on `meta`)."""

from __future__ import annotations

import re

import huggingface_hub.constants
import pytest
import torch

from afrocomet.data.schema import LABELS
from afrocomet.errors import AfroCometError
from afrocomet.models.build import (
    TASKS,
    build_model,
    count_parameters,
    load_pretrained,
    preset_parameters,
    presets_table,
)
from afrocomet.models.presets import PRESETS, ModelPreset, get_preset


def test_paper_parameter_counts_from_built_models():
    # The paper: AfroXLMR-Large 560M teacher, AfroXLMR-Comet student 69M (8.1x smaller).
    assert preset_parameters("afroxlmr-large") == 559_890_432
    assert preset_parameters("comet") == 68_937_216


def test_meta_count_equals_real_count():
    for name in ("tiny-teacher", "demo-student"):
        assert preset_parameters(name) == count_parameters(build_model(name, "base"))


def test_demo_student_is_about_8x_smaller():
    teacher, student = get_preset("demo-teacher"), get_preset("demo-student")
    assert teacher.vocab_size == student.vocab_size == 8000
    assert teacher.num_layers == 4 * student.num_layers and student.head_dim >= 24  # the paper's 24 -> 6 layers
    ratio = preset_parameters("demo-teacher") / preset_parameters("demo-student")
    assert 8 <= ratio <= 10, ratio


def test_presets_table_matches_descriptions():
    rows = presets_table()
    assert [r["name"] for r in rows] == list(PRESETS)
    for row in rows:
        assert row["parameters"] == preset_parameters(row["name"])
        # A count written in a description must be the built model's count.
        for written in re.findall(r"(\d{1,3}(?:,\d{3})+) parameters", row["description"]):
            assert int(written.replace(",", "")) == row["parameters"], row["name"]


def test_to_config_follows_xlmr_conventions():
    config = get_preset("comet").to_config()
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (1, 0, 2)
    assert config.type_vocab_size == 1 and config.layer_norm_eps == 1e-5 and config.hidden_act == "gelu"
    assert config.hidden_dropout_prob == 0.1 == config.attention_probs_dropout_prob
    assert config.num_attention_heads == 4 and config.hidden_size // config.num_attention_heads == 64
    assert config.id2label == dict(enumerate(LABELS))
    assert config.label2id == {label: i for i, label in enumerate(LABELS)}
    assert config.model_type == "xlm-roberta"

    custom = get_preset("tiny-student").to_config(vocab_size=777, num_labels=2, hidden_dropout_prob=0.0)
    assert custom.vocab_size == 777 and custom.num_labels == 2 and custom.hidden_dropout_prob == 0.0
    assert get_preset("demo-teacher").max_length == 128


def test_preset_errors():
    with pytest.raises(AfroCometError, match="comet"):
        get_preset("nope")
    with pytest.raises(AfroCometError, match="multiple"):
        ModelPreset("bad", 2, 100, 3, 200, 1000)
    with pytest.raises(AfroCometError, match="num_labels"):
        get_preset("tiny-student").to_config(num_labels=2, id2label={0: "a", 1: "b", 2: "c"})


@pytest.mark.parametrize("name", ["tiny-teacher", "tiny-student"])
@pytest.mark.parametrize("task", list(TASKS))
def test_tiny_presets_build_and_run(name, task):
    preset = get_preset(name)
    model = build_model(name, task, seed=0).eval()
    input_ids = torch.tensor([[0, 10, 11, 12, 2], [0, 13, 2, 1, 1]])  # (batch=2, seq=5)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=(input_ids != 1).long())
    if task == "classification":
        assert out.logits.shape == (2, 3)
    elif task == "mlm":
        assert out.logits.shape == (2, 5, preset.vocab_size)
    else:
        assert out.last_hidden_state.shape == (2, 5, preset.hidden_size)
        assert out.pooler_output.shape == (2, preset.hidden_size)
    assert torch.isfinite(out[0]).all()


def test_build_options():
    mlm = build_model("tiny-student", "mlm", vocab_size=123)
    assert mlm.lm_head.decoder.weight is mlm.roberta.embeddings.word_embeddings.weight
    every_tensor = sum(p.numel() for _, p in mlm.named_parameters(remove_duplicate=False))
    # The decoder weight (tied to the embeddings) and its bias (tied to lm_head.bias) count once.
    assert count_parameters(mlm) == every_tensor - 123 * 32 - 123
    assert build_model("tiny-student", "base").config._attn_implementation == "sdpa"
    assert build_model("tiny-student", "base", attn_implementation="eager").config._attn_implementation == "eager"
    with pytest.raises(AfroCometError, match="classification"):
        build_model("tiny-student", "tagging")


def test_seed_fixes_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model("tiny-student", seed=7).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_model("tiny-student", seed=7).state_dict()
    c = build_model("tiny-student", seed=8).state_dict()
    key = "roberta.encoder.layer.0.attention.self.query.weight"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[key], c[key])


def test_config_is_not_mutated():
    config = get_preset("tiny-student").to_config()
    build_model(config, "base", attn_implementation="eager")
    assert config._attn_implementation != "eager"


def test_load_pretrained_round_trip(tmp_path):
    model = build_model("tiny-student", "classification", seed=0)
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = load_pretrained(tmp_path / "m", "classification")
    assert type(loaded).__name__ == "XLMRobertaForSequenceClassification"
    assert loaded.config.id2label == dict(enumerate(LABELS))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert type(load_pretrained(tmp_path / "m", "base")).__name__ == "XLMRobertaModel"
    with pytest.raises(AfroCometError, match="mismatched|size"):
        load_pretrained(tmp_path / "m", "classification", num_labels=5)


def test_load_pretrained_refuses_bad_folders(tmp_path):
    build_model("tiny-student", "base").config.save_pretrained(tmp_path / "noweights")
    with pytest.raises(AfroCometError, match=r"has no weights \(model.safetensors\)"):
        load_pretrained(tmp_path / "noweights", "mlm")

    build_model("tiny-student", "base").config.save_pretrained(tmp_path / "bin")
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(AfroCometError, match="convert them to model.safetensors"):
        load_pretrained(tmp_path / "bin", "mlm")

    with pytest.raises(AfroCometError, match="not found"):
        load_pretrained(tmp_path / "missing", "mlm")


def test_load_pretrained_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(AfroCometError, match="could not be downloaded"):
        load_pretrained("afrocomet-tests/no-such-model", "mlm")
