"""Every folder afrocomet writes carries the model's maximum length (tokenizer_config.json
`model_max_length`), so `pipeline(..., truncation=True)` and `afrocomet predict` cut long texts
instead of indexing past the position table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from afrocomet.models.build import build_model
from helpers import WORDS, tiny_tokenizer

LONG_TEXT = " ".join(WORDS[i % len(WORDS)] for i in range(2000))  # 2,000 word-level tokens
TINY_STUDENT_LIMIT = 64  # 66 positions - XLM-R's padding offset of 2


def _saved_limit(folder: Path) -> int | None:
    return json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("model_max_length")


def _pipeline_labels(folder: Path, texts: list[str]) -> list[str]:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder), truncation=True, device="cpu")
    return [out["label"] for out in classify(texts)]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """A tiny classifier saved as a run saves its student (run.teacher.save_hf_model)."""
    from afrocomet.run.teacher import save_hf_model

    tokenizer = tiny_tokenizer()
    model = build_model("tiny-student", vocab_size=len(tokenizer), seed=0).eval()
    out = tmp_path_factory.mktemp("run") / "student"
    save_hf_model(model, tokenizer, out)
    return out


def test_model_max_length_of_configs():
    from transformers import BertConfig, XLMRobertaConfig

    from afrocomet.tokenizer import model_max_length

    assert model_max_length(XLMRobertaConfig(max_position_embeddings=514)) == 512
    assert model_max_length(XLMRobertaConfig(max_position_embeddings=66)) == 64
    assert model_max_length(BertConfig(max_position_embeddings=512)) == 512  # no padding offset


def test_run_student_folder_truncates_in_pipeline(one_thread, student_dir):
    assert _saved_limit(student_dir) == TINY_STUDENT_LIMIT
    labels = _pipeline_labels(student_dir, [LONG_TEXT, "ina son"])
    assert len(labels) == 2 and all(label in {"negative", "neutral", "positive"} for label in labels)


def test_trimmed_folder_truncates_in_pipeline(one_thread, tmp_path):
    from afrocomet.models.vocab import trim_folder

    tokenizer = tiny_tokenizer()  # saved the plain transformers way: no model_max_length in it
    model = build_model("tiny-student", vocab_size=len(tokenizer), seed=1).eval()
    model.save_pretrained(tmp_path / "full")
    tokenizer.save_pretrained(tmp_path / "full")
    trim_folder(tmp_path / "full", tmp_path / "small", WORDS[:8])
    assert _saved_limit(tmp_path / "small") == TINY_STUDENT_LIMIT
    assert len(_pipeline_labels(tmp_path / "small", [LONG_TEXT])) == 1


def test_predict_cli_on_a_2000_token_text(student_dir, tmp_path):
    tsv = tmp_path / "long.tsv"
    tsv.write_text(f"ID\ttweet\nlong\t{LONG_TEXT}\nshort\tina son\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "afrocomet", "predict", "--model", str(student_dir), "--input",
                           str(tsv), "--output", str(tmp_path / "out.tsv"), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "ID\tlabel" and [r.split("\t")[0] for r in rows[1:]] == ["long", "short"]
    assert "1 truncated" in proc.stderr
