"""BERT-family models (e.g. multilingual-e5) go through the same adaptor as XLM-R ones; a teacher
without its masked-LM head is never distilled against a random one; trimming and student init
handle BERT's head (`cls.predictions`), its pooler and its position numbering."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, XLMRobertaConfig, XLMRobertaForMaskedLM

from afrocomet.config import StageConfig
from afrocomet.distill.objective import HybridLoss, model_outputs, representation_only
from afrocomet.errors import AfroCometError
from afrocomet.models.build import load_pretrained, missing_head, missing_head_weights, mlm_head
from afrocomet.models.vocab import trim_model
from afrocomet.quiet import AfroCometWarning

SIZES = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[0, 5, 6, 7, 2, 1], [0, 8, 9, 2, 1, 1]])
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 1] = 6, 8
    return {"input_ids": ids, "attention_mask": (ids != 1).long(), "mlm_labels": labels}


@pytest.mark.parametrize("family", ["bert", "xlm-roberta"])
def test_masked_lm_logits_at_masked_positions_equal_the_full_forward(family):
    torch.manual_seed(0)
    model = (BertForMaskedLM(BertConfig(**SIZES)) if family == "bert"
             else XLMRobertaForMaskedLM(XLMRobertaConfig(**SIZES, pad_token_id=1))).eval()
    batch = _batch()
    out = model_outputs(model, batch, "mlm")
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [b, s, vocab]
    selected = batch["mlm_labels"] != -100
    assert out["logits"].shape == (2, SIZES["vocab_size"])
    torch.testing.assert_close(out["logits"], full[selected])
    assert out["labels"].tolist() == [6, 8]
    assert mlm_head(model) is (model.cls if family == "bert" else model.lm_head)


def test_an_encoder_without_a_head_is_a_one_line_error():
    with pytest.raises(AfroCometError, match="not a masked-LM model"):
        mlm_head(BertModel(BertConfig(**SIZES), add_pooling_layer=False))


# ----------------------------------------------------------------------------- a teacher without its MLM head


def _bert_folder(tmp_path, kind: str):
    """A tiny BERT folder with XLM-R's special ids: `encoder` (BertModel, no pooler, like
    multilingual-e5), `pooled` (BertModel with its pooler) or `mlm` (BertForMaskedLM, head saved)."""
    torch.manual_seed(0)
    config = BertConfig(**SIZES, pad_token_id=1, max_position_embeddings=32)
    model = {"encoder": lambda: BertModel(config, add_pooling_layer=False), "pooled": lambda: BertModel(config),
             "mlm": lambda: BertForMaskedLM(config)}[kind]()
    folder = tmp_path / kind
    model.save_pretrained(folder)
    return folder, model


def _stage(**weights) -> StageConfig:
    return StageConfig(name="stage1", kind="distill-mlm", **weights)


@pytest.mark.parametrize("kind, missing", [("encoder", True), ("pooled", True), ("mlm", False)])
def test_missing_head_from_headers_agrees_with_transformers(tmp_path, kind, missing):
    folder, _ = _bert_folder(tmp_path, kind)
    header = missing_head_weights(folder, "mlm")
    model, info = load_pretrained(folder, "mlm", output_loading_info=True)
    random = missing_head(model, info["missing_keys"])
    assert bool(header) == bool(random) == missing
    assert set(header) <= set(random) and all(k.startswith("cls.predictions.") for k in random)


def test_teacher_head_is_never_called_without_a_kd_term():
    torch.manual_seed(0)
    teacher = BertForMaskedLM(BertConfig(**SIZES, pad_token_id=1)).eval()
    student = XLMRobertaForMaskedLM(XLMRobertaConfig(**SIZES, pad_token_id=1))
    calls = []
    mlm_head(teacher).register_forward_hook(lambda *_: calls.append(1))
    losses = HybridLoss(_stage(kd_weight=0.0), student, teacher).terms(student, teacher, _batch(), 2.0)
    assert set(losses) == {"hard", "attention"} and calls == []  # the encoder ran (maps), the head did not
    assert set(HybridLoss(_stage(), student, teacher).terms(student, teacher, _batch(), 2.0)) == {"hard", "kd", "attention"}
    assert calls == [1]  # with KD the head runs: the hook does see it


def test_representation_only_drops_kd_or_stops_in_one_line():
    stage = representation_only(_stage(kd_weight=1.0, attention_weight=0.5, hard_weight=1.0), ["cls.predictions.bias"])
    assert (stage.kd_weight, stage.attention_weight, stage.hard_weight) == (0.0, 0.5, 1.0)
    with pytest.raises(AfroCometError, match="attention_weight > 0") as err:
        representation_only(_stage(attention_weight=0.0), ["cls.predictions.bias"])
    assert "\n" not in str(err.value) and "cls.predictions.bias" in str(err.value)


@pytest.mark.parametrize("kind", ["encoder", "mlm"])
def test_stage1_teacher_is_the_encoder_alone_when_the_head_is_missing(tmp_path, kind):
    from afrocomet.config import RunConfig
    from afrocomet.run.teacher import _stage1_teacher

    folder, _ = _bert_folder(tmp_path, kind)
    config = RunConfig(stages=[StageConfig(name="ft", kind="teacher-finetune"), _stage(kd_weight=1.0)])
    config.model.teacher = str(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        teacher, stages, notes = _stage1_teacher(config)
    ours = [w for w in caught if issubclass(w.category, AfroCometWarning)]
    if kind == "encoder":
        assert isinstance(teacher, BertModel) and not hasattr(teacher, "cls")  # no head left to call
        assert len(ours) == 1 and "representation-only" in str(ours[0].message)
        assert stages[1].kd_weight == 0.0 and config.stages[1].kd_weight == 1.0  # the caller's kept
        assert notes["mlm_head"] == "missing" and notes["representation_only"] == ["stage1"]
    else:
        assert isinstance(teacher, BertForMaskedLM) and not ours and notes is None
        assert stages[1].kd_weight == 1.0


def test_preflight_stops_a_stage1_that_has_nothing_to_distil(tmp_path):
    from afrocomet.config import RunConfig
    from afrocomet.distill.doctor import preflight, teacher_head_missing

    folder, _ = _bert_folder(tmp_path, "encoder")
    config = RunConfig(stages=[_stage(attention_weight=0.0)])
    config.model.teacher, config.model.student = str(folder), "tiny-student"
    config.data.max_length = 32  # what the teacher's 32 positions hold
    assert teacher_head_missing(config)
    with pytest.raises(AfroCometError, match="masked-LM head") as err:
        preflight(config, where="run.yaml")
    assert "\n" not in str(err.value) and "run.yaml" in str(err.value)
    config.stages = [_stage(attention_weight=1.0)]
    assert preflight(config)["teacher"].model_type == "bert"


# ----------------------------------------------------------------------------- trimming and init


def test_trimming_a_bert_masked_lm_keeps_its_logits_tied_and_shared():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**SIZES, pad_token_id=1)).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # a bias that is not zero, to see it follow the rows
    keep = [0, 1, 2, 3, 5, 6, 7, 8, 9, 17, 39]
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]])
    new_ids = torch.tensor([[keep.index(int(i)) for i in row] for row in ids])
    mask = (ids != 1).long()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits[..., keep]
        trim_model(model, keep)
        after = model(input_ids=new_ids, attention_mask=mask).logits
    torch.testing.assert_close(after, before)
    decoder = model.cls.predictions.decoder
    assert decoder.weight is model.bert.embeddings.word_embeddings.weight  # still tied
    assert decoder.bias is model.cls.predictions.bias and decoder.bias.shape == (len(keep),)  # still shared
    assert model.config.vocab_size == len(keep)


@pytest.mark.parametrize("kind", ["encoder", "pooled"])
def test_trim_folder_saves_a_pooler_only_when_there_was_one(tmp_path, kind):
    from safetensors import safe_open

    from afrocomet.models.vocab import trim_folder
    from helpers import WORDS, tiny_tokenizer

    folder, model = _bert_folder(tmp_path, kind)
    tiny_tokenizer().save_pretrained(folder)
    out = tmp_path / "trimmed"
    report = trim_folder(folder, out, [" ".join(WORDS[:5])])
    assert report.rows_kept < SIZES["vocab_size"]
    with safe_open(out / "model.safetensors", "pt") as f:
        pooler = {k: f.get_tensor(k) for k in f.keys() if "pooler" in k}
    if kind == "encoder":
        assert not pooler  # never a random pooler saved as if real
    else:
        assert pooler and torch.equal(pooler["pooler.dense.weight"], model.pooler.dense.weight)


@pytest.mark.parametrize("with_head", [True, False])
def test_xlmr_student_from_a_bert_teacher_maps_positions_types_and_head(with_head):
    from afrocomet.models.init import init_from_teacher, pca_basis

    torch.manual_seed(0)
    config = BertConfig(**{**SIZES, "hidden_size": 32, "num_attention_heads": 4}, pad_token_id=1,
                        max_position_embeddings=24)
    teacher = BertForMaskedLM(config) if with_head else BertModel(config, add_pooling_layer=False)
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_()  # every weight distinct, so a wrong row shows
    student = XLMRobertaForMaskedLM(XLMRobertaConfig(**SIZES, pad_token_id=1, max_position_embeddings=18,
                                                     type_vocab_size=1))
    report = init_from_teacher(student, teacher)
    w = pca_basis(teacher.base_model.embeddings.word_embeddings.weight.detach(), 16).components  # [32, 16]
    t_emb, s_emb = teacher.base_model.embeddings, student.roberta.embeddings
    with torch.no_grad():
        # XLM-R's position p is row p + 2 (padding_idx + 1); BERT's is row p
        torch.testing.assert_close(s_emb.position_embeddings.weight[2:18], t_emb.position_embeddings.weight[:16] @ w)
        torch.testing.assert_close(s_emb.token_type_embeddings.weight[0], t_emb.token_type_embeddings.weight[0] @ w)
        torch.testing.assert_close(s_emb.word_embeddings.weight, t_emb.word_embeddings.weight @ w)
    assert report["lm_head"] is with_head
    if with_head:
        torch.testing.assert_close(student.lm_head.bias, teacher.cls.predictions.bias)
        torch.testing.assert_close(student.lm_head.dense.weight,
                                   w.T @ teacher.cls.predictions.transform.dense.weight @ w)


def test_a_random_classification_head_is_never_distilled_from(tmp_path):
    from afrocomet.config import RunConfig
    from afrocomet.run.teacher import _check_task_head

    finetune = StageConfig(name="ft", kind="teacher-finetune")
    ctx = RunConfig(stages=[finetune, StageConfig(name="stage2", kind="distill-task")])  # the check reads the config
    _check_task_head(ctx, ["classifier.weight"], finetune)  # fine-tuning trains the new head
    _check_task_head(ctx, [], None)  # a trained head of its own
    with pytest.raises(AfroCometError, match="no trained classification head") as err:
        _check_task_head(ctx, ["classifier.weight"], None)
    assert "\n" not in str(err.value) and "stage2" in str(err.value)


def test_trim_folder_refuses_to_save_weights_the_folder_lacks(tmp_path):
    import json

    from afrocomet.models.vocab import trim_folder
    from helpers import WORDS, tiny_tokenizer

    folder, _ = _bert_folder(tmp_path, "encoder")
    tiny_tokenizer().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(AfroCometError, match="lacks .* weights") as err:
        trim_folder(folder, tmp_path / "trimmed", [" ".join(WORDS[:5])])
    assert "\n" not in str(err.value) and not (tmp_path / "trimmed").exists()


def test_the_loss_returns_its_weighted_total_and_scales_by_a_process_share():
    """HybridLoss forms the total itself (Σ w·term with fixed weights) beside its terms; a process's
    share of the global batch (several processes) scales the label terms and the attention term apart."""
    torch.manual_seed(0)
    teacher = BertForMaskedLM(BertConfig(**SIZES, pad_token_id=1)).eval()
    student = XLMRobertaForMaskedLM(XLMRobertaConfig(**SIZES, pad_token_id=1)).eval()
    loss_fn = HybridLoss(_stage(kd_weight=0.5, attention_weight=2.0), student, teacher)
    with torch.no_grad():
        plain = loss_fn.terms(student, teacher, _batch(), 2.0)
        terms, total = loss_fn(student, teacher, _batch(), 2.0)
        shared, shared_total = loss_fn(student, teacher, _batch(), 2.0, share=[0.5, 3.0])
    weights = {"hard": 1.0, "kd": 0.5, "attention": 2.0}
    torch.testing.assert_close(total, sum(weights[k] * plain[k] for k in plain))
    assert {k: float(v) for k, v in terms.items()} == pytest.approx({k: float(v) for k, v in plain.items()})
    scaled = {k: plain[k] * (3.0 if k == "attention" else 0.5) for k in plain}
    torch.testing.assert_close(shared_total, sum(weights[k] * scaled[k] for k in plain))
