"""Tokenizer training, saving and reloading (on a slice of the real AfriSenti training text)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import huggingface_hub.constants
import pytest
import torch

from afrocomet.data.afrisenti import read_tsv
from afrocomet.data.schema import DEFAULT_LANGUAGES
from afrocomet.errors import AfroCometError
from afrocomet.models.build import build_model
from afrocomet.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

VOCAB = 1000
PER_LANGUAGE = 400

# Encodes texts from stdin with a tokenizer folder, in a fresh interpreter.
RELOAD_SCRIPT = """
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.load(sys.stdin)
print(json.dumps({
    "class": type(tok).__name__,
    "len": len(tok),
    "special": [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id],
    "mask": tok.mask_token,
    "ids": [tok(t)["input_ids"] for t in texts],
    "pair": tok(texts[0], texts[1])["input_ids"],
}))
"""


def _texts(afrisenti_dir, split: str, per_language: int) -> list[str]:
    return [ex.text for lang in DEFAULT_LANGUAGES for ex in read_tsv(afrisenti_dir / lang / f"{split}.tsv")[:per_language]]


@pytest.fixture(scope="module")
def train_texts(afrisenti_dir) -> list[str]:
    return _texts(afrisenti_dir, "train", PER_LANGUAGE)


@pytest.fixture(scope="module")
def saved(train_texts, tmp_path_factory):
    tok = train_tokenizer(train_texts, VOCAB)
    return tok, save_tokenizer(tok, tmp_path_factory.mktemp("tok") / "tokenizer")


def test_special_tokens_and_size(saved):
    tok, _ = saved
    assert len(tok) == VOCAB  # exact on this text
    assert [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert tok.mask_token == "<mask>" and tok.mask_token_id == VOCAB - 1
    assert tok.cls_token_id == 0 and tok.sep_token_id == 2


def test_xlmr_templates_and_normalisation(saved):
    tok, _ = saved
    a = tok("Ina son ka", add_special_tokens=False)["input_ids"]
    b = tok("sannu da zuwa", add_special_tokens=False)["input_ids"]
    assert tok("Ina son ka")["input_ids"] == [0, *a, 2]
    assert tok("Ina son ka", "sannu da zuwa")["input_ids"] == [0, *a, 2, 2, *b, 2]
    # nmt_nfkc: full-width letters fold to ASCII, extra whitespace collapses; case is kept.
    assert tok.tokenize("ｓａｎｎｕ\u3000 da\tzuwa") == tok.tokenize("sannu da zuwa")
    assert tok.tokenize("Sannu") != tok.tokenize("sannu")
    assert tok.tokenize("sannu")[0].startswith("▁")


def test_saved_folder_reloads_identically_in_fresh_process(saved, afrisenti_dir):
    tok, folder = saved
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] in ("XLMRobertaTokenizer", "XLMRobertaTokenizerFast")
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left

    texts = _texts(afrisenti_dir, "dev", 8) + ["a <mask> b", "  ｆｕｌｌ  width ☠☠ 🇰🇪"]  # unseen text
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(folder)],
        input=json.dumps(texts), capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    fresh = json.loads(result.stdout)
    assert fresh["class"].startswith("XLMRobertaTokenizer")
    assert fresh["len"] == len(tok) and fresh["mask"] == "<mask>"
    assert fresh["special"] == [0, 1, 2, 3, len(tok) - 1]
    assert fresh["ids"] == [tok(t)["input_ids"] for t in texts]
    assert fresh["pair"] == tok(texts[0], texts[1])["input_ids"]
    assert sum(ids.count(3) for ids in fresh["ids"]) < sum(map(len, fresh["ids"]))  # not all <unk>

    loaded = load_tokenizer(folder)
    assert [loaded(t)["input_ids"] for t in texts] == fresh["ids"]


def test_training_is_deterministic(saved, train_texts):
    tok, _ = saved
    again = train_tokenizer(train_texts, VOCAB)
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_rare_characters_do_not_need_vocabulary():
    # 300 characters seen once each (0.03% of all characters): more than the whole vocabulary,
    # so like sentencepiece's character_coverage they are left out and become <unk>.
    rare = "".join(chr(0x4E00 + i) for i in range(300))
    tok = train_tokenizer(["habari za asubuhi rafiki yangu"] * 40000 + [rare], vocab_size=60)
    assert len(tok) <= 60 and tok.mask_token_id == len(tok) - 1
    assert tok.unk_token_id in tok(chr(0x4E00), add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in tok("rafiki yangu", add_special_tokens=False)["input_ids"]


def test_train_errors():
    with pytest.raises(AfroCometError, match="vocab_size"):
        train_tokenizer(["a b c"], vocab_size=3)
    with pytest.raises(AfroCometError, match="no text"):
        train_tokenizer(["", "  "], vocab_size=100)


def test_save_replaces_existing_folder(saved, tmp_path):
    tok, _ = saved
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "stale.txt").write_text("old")
    save_tokenizer(tok, tmp_path / "tok")
    assert not (tmp_path / "tok" / "stale.txt").exists()
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


def test_load_tokenizer_errors(tmp_path, monkeypatch):
    with pytest.raises(AfroCometError, match="tokenizer folder not found"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AfroCometError, match="not a tokenizer folder"):
        load_tokenizer(tmp_path / "empty")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(AfroCometError, match="could not be downloaded"):
        load_tokenizer("afrocomet-tests/no-such-tokenizer")


def test_tiny_student_runs_on_tokenised_text(saved, afrisenti_dir):
    tok, _ = saved
    texts = _texts(afrisenti_dir, "dev", 2)
    batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tok.pad_token_id).all()
    for task, width in (("classification", 3), ("mlm", len(tok))):
        model = build_model("tiny-student", task, vocab_size=len(tok), seed=0).eval()
        with torch.no_grad():
            logits = model(**batch).logits
        assert logits.shape[0] == len(texts) and logits.shape[-1] == width
        assert torch.isfinite(logits).all()
