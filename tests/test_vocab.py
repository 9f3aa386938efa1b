"""Vocabulary trimming: same outputs on kept text, fallback on unseen text, reload without
afrocomet, the comet student at full vocabulary size, and the trim-vocab command."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from afrocomet.cli import main
from afrocomet.models.build import build_model, count_parameters
from afrocomet.models.vocab import (
    count_token_ids,
    pad_unigram_vocab,
    select_token_ids,
    trim_folder,
    trim_model,
    trim_together,
    trim_tokenizer,
)

N_TEXTS = 300  # per language


@pytest.fixture(scope="module")
def tweets(afrisenti_dir):
    from afrocomet.data.afrisenti import load_afrisenti

    data = load_afrisenti(["hau", "ibo", "kin", "swa", "yor"], afrisenti_dir, splits=("train",))
    return {lang: ds.texts("train")[:N_TEXTS] for lang, ds in data.items()}


@pytest.fixture(scope="module")
def tokenizer(tweets):
    """A Unigram tokenizer trained on Hausa and Yoruba; trimming on Hausa alone drops Yoruba's pieces."""
    from afrocomet.tokenizer import train_tokenizer

    return train_tokenizer(tweets["hau"] + tweets["yor"], vocab_size=600)


@pytest.fixture(scope="module")
def kept(tokenizer, tweets):
    keep = select_token_ids(tokenizer, count_token_ids(tokenizer, tweets["hau"]))
    assert len(keep) < len(tokenizer)  # something to trim
    return keep, trim_tokenizer(tokenizer, keep)


def _encode(tokenizer, texts):
    return tokenizer(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")


def test_same_pieces_then_same_mlm_logits(one_thread, tokenizer, tweets, kept):
    keep, small = kept
    texts = tweets["hau"][:8]
    full, trimmed = _encode(tokenizer, texts), _encode(small, texts)
    new_id = {old: new for new, old in enumerate(keep)}
    remapped = full["input_ids"].clone().apply_(lambda i: new_id[i])
    assert torch.equal(remapped, trimmed["input_ids"])  # every piece kept: same segmentation
    model = build_model("tiny-teacher", "mlm", vocab_size=len(tokenizer), seed=0).eval()
    small_model = trim_model(copy.deepcopy(model), keep)
    assert small_model.lm_head.decoder.weight is small_model.get_input_embeddings().weight  # still tied
    assert small_model.config.vocab_size == len(small) and small_model.lm_head.bias.shape == (len(small),)
    masked = torch.rand(full["input_ids"].shape, generator=torch.Generator().manual_seed(0)) < 0.3
    masked &= full["attention_mask"].bool() & (full["input_ids"] > 3)
    assert masked.any()
    full_ids = full["input_ids"].masked_fill(masked, tokenizer.mask_token_id)
    small_ids = trimmed["input_ids"].masked_fill(masked, small.mask_token_id)
    with torch.inference_mode():
        expected = model(input_ids=full_ids, attention_mask=full["attention_mask"]).logits[masked][:, keep]
        got = small_model(input_ids=small_ids, attention_mask=trimmed["attention_mask"]).logits[masked]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_same_classification_logits(one_thread, tokenizer, tweets, kept):
    keep, small = kept
    texts = tweets["hau"][8:16]
    model = build_model("tiny-teacher", "classification", vocab_size=len(tokenizer), seed=1).eval()
    small_model = trim_model(copy.deepcopy(model), keep)
    assert count_parameters(small_model) == count_parameters(model) - (len(tokenizer) - len(keep)) * 64
    with torch.inference_mode():
        expected = model(**_encode(tokenizer, texts)).logits
        got = small_model(**_encode(small, texts)).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def _hand_tokenizer():
    from transformers import XLMRobertaTokenizer

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0), ("▁sannu", -2.0),
              ("▁san", -4.0), ("nu", -4.0), ("s", -5.0), ("a", -5.0), ("n", -5.0), ("u", -5.0), ("▁zuwa", -2.0),
              ("z", -5.0), ("w", -5.0), ("<mask>", 0.0)]
    return XLMRobertaTokenizer(vocab=pieces)


def _pieces(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_unseen_pieces_fall_back_to_sub_pieces_or_unk():
    tok = _hand_tokenizer()
    assert _pieces(tok, "sannu san zuwa") == ["▁sannu", "▁san", "▁zuwa"]
    keep = select_token_ids(tok, count_token_ids(tok, ["sannu"]))
    # specials, the seen piece, and the characters of what was seen; <mask> stays last
    assert keep == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 15]
    small = trim_tokenizer(tok, keep)
    assert len(small) == 11 and small.mask_token_id == 10 and small.pad_token_id == 1 and small.unk_token_id == 3
    assert _pieces(small, "sannu") == ["▁sannu"]
    assert _pieces(small, "san") == ["▁", "s", "a", "n"]  # "▁san" dropped: its characters remain
    assert _pieces(small, "zuwa") == ["▁", "<unk>", "u", "<unk>", "a"]  # z and w never seen
    assert small("sannu")["input_ids"] == [0, 5, 2]  # the post-processor's <s> </s> ids survive
    # min_count drops rare pieces but keeps their characters
    keep = select_token_ids(tok, count_token_ids(tok, ["sannu", "sannu zuwa"]), min_count=2)
    assert _pieces(trim_tokenizer(tok, keep), "zuwa") == ["▁", "z", "u", "w", "a"]
    without = select_token_ids(tok, count_token_ids(tok, ["sannu"]), keep_characters=False)
    assert _pieces(trim_tokenizer(tok, without), "san") == ["<unk>"]  # nothing fits: one fused <unk>


RELOAD = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    folder, texts = sys.argv[1], json.loads(sys.argv[2])
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        logits = model(**tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")).logits
    assert not any(name.startswith("afrocomet") for name in sys.modules)
    print(json.dumps({"logits": logits.tolist(), "ids": tok(texts[0])["input_ids"]}))
""")


def test_trimmed_folder_reloads_with_transformers_alone(one_thread, tmp_path, tokenizer, tweets):
    model = build_model("tiny-teacher", "classification", vocab_size=len(tokenizer), seed=2).eval()
    model.save_pretrained(tmp_path / "full")
    tokenizer.save_pretrained(tmp_path / "full")
    report = trim_folder(tmp_path / "full", tmp_path / "small", tweets["hau"])
    assert report.rows_total == len(tokenizer) and report.rows_kept < len(tokenizer)
    assert report.parameters_after == report.parameters_before - (report.rows_total - report.rows_kept) * 64
    assert report.kept_fraction == 1.0
    texts = tweets["hau"][20:24]
    with torch.inference_mode():
        expected = model(**_encode(tokenizer, texts)).logits
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "small"), json.dumps(texts)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert max(out["ids"]) < report.rows_kept
    torch.testing.assert_close(torch.tensor(out["logits"]), expected, atol=1e-5, rtol=0)


def test_comet_at_full_vocabulary_trims_below_15m(one_thread, tokenizer, tweets):
    """The paper's student with a 250,002-piece Unigram vocabulary, trimmed to the five languages."""
    big = pad_unigram_vocab(tokenizer, 250_002)
    assert len(big) == 250_002 and big.mask_token_id == 250_001
    sample = tweets["hau"][:50]
    assert big(sample)["input_ids"] == tokenizer(sample)["input_ids"]  # fillers never match text
    student = build_model("comet", "base", vocab_size=len(big), seed=0)
    assert count_parameters(student) == 68_937_216
    texts = [t for lang in ("hau", "ibo", "kin", "swa", "yor") for t in tweets[lang]]
    small, keep, reports = trim_together({"student": student}, big, texts)
    r = reports["student"]
    assert r.parameters_before == 68_937_216 and r.parameters_after == count_parameters(student)
    assert r.parameters_after <= 15_000_000 and r.parameters_after <= 0.03 * 559_890_432
    assert len(small) == r.rows_kept == len(keep) and student.config.vocab_size == len(small)
    assert small(sample)["input_ids"] == [[keep.index(i) for i in ids] for ids in tokenizer(sample)["input_ids"]]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("vocab") / "model"
    model = build_model("tiny-student", "classification", vocab_size=len(tokenizer), seed=3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_trims_a_saved_model(one_thread, tmp_path, tiny_folder, afrisenti_dir, capsys):
    out = tmp_path / "small"
    code = main(["trim-vocab", "--model", str(tiny_folder), "--out", str(out), "--languages", "hau",
                 "--data-dir", str(afrisenti_dir), "--min-count", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "vocabulary rows" in printed and "parameters" in printed and str(out) in printed
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] < json.loads((tiny_folder / "config.json").read_text())["vocab_size"]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("args, needle", [
    (["--model", "{missing}"], "model folder not found"),
    (["--model", "{model}", "--min-count", "0"], "min_count must be >= 1"),
    (["--model", "{model}", "--extra-text", "{missing}"], "extra text file not found"),
], ids=["missing-model", "min-count-0", "missing-extra-text"])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, tiny_folder, afrisenti_dir, capsys, args, needle):
    out = tmp_path / "out"
    names = {"missing": str(tmp_path / "nope"), "model": str(tiny_folder)}
    argv = ["trim-vocab", *(a.format(**names) for a in args), "--out", str(out), "--data-dir", str(afrisenti_dir)]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_run_flag_and_paper_default():
    from afrocomet.cli import _resolve_config, run
    from afrocomet.run import default_config

    assert default_config(teacher="Davlan/afro-xlmr-large").model.trim_vocab  # the paper's setting
    assert not default_config().model.trim_vocab and not default_config(quick=True).model.trim_vocab
    for argv, expected in ((["--quick"], False), (["--quick", "--trim-vocab"], True),
                           (["--teacher", "some/model", "--no-trim-vocab"], False)):
        params = run.make_context("run", argv).params
        assert _resolve_config(params.pop("config_file"), params).model.trim_vocab is expected
