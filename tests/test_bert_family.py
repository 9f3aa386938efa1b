"""BERT-family models (e.g. multilingual-e5) go through the same adaptor as XLM-R ones."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, XLMRobertaConfig, XLMRobertaForMaskedLM

from afrocomet.distill.objective import model_outputs
from afrocomet.errors import AfroCometError
from afrocomet.models.build import mlm_head

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
