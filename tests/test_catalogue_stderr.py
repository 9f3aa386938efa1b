"""More rows of README.md's bad-input catalogue, each through the real `afrocomet` command in a
subprocess (its real stderr, not capsys): exit 2, exactly one `afrocomet: error:` line that names
the file (and line) or field at fault, no traceback, and the folder it ran in unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import tiny_tokenizer, save_tiny_classifier

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def fails(folder: Path, args: list[str], *needles: str) -> str:
    """Run `afrocomet ARGS` in `folder`: exit 2, one error line with every needle, `folder` unchanged."""
    before = tree(folder)
    proc = subprocess.run([sys.executable, "-m", "afrocomet", *args], capture_output=True, text=True, env=ENV,
                          cwd=folder, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("afrocomet: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree(folder) == before
    return lines[0]


# ----------------------------------------------------------------------------- config files

STAGE = "stages:\n  - name: s\n    kind: distill-task\n"


@pytest.mark.parametrize("text, needles", [
    ("", ["holds no settings"]),
    ("# only a comment\n", ["holds no settings"]),
    ("null\n", ["holds no settings"]),
    ("seed: 3\n", ["lists no stages"]),
    ("seed: 99999999999999999999999\n" + STAGE, [":1:", "seed must be between 0 and 4294967295"]),
    ("seed: -1\n" + STAGE, ["seed must be between 0 and 4294967295"]),
    ("device: tpu\n" + STAGE, [":1:", "unknown device 'tpu'", "auto, cpu, cuda or cuda:N"]),
    (STAGE + "    temperature: .nan\n", [":4:", "temperature must be a finite number, got nan"]),
    (STAGE + "    temperature: 1.0e+308\n", [":4:", "temperature must be at most 100"]),
    (STAGE + "    lr: .inf\n", [":4:", "lr must be a finite number, got inf"]),
    (STAGE + "    lr: 1.0e+308\n", [":4:", "lr must be at most 10"]),
    ("data:\n  sampling_alpha: .nan\n" + STAGE, [":2:", "sampling_alpha must be a finite number"]),
    ("data:\n  sampling_alpha: 1.0e+308\n" + STAGE, [":2:", "sampling_alpha must be at most 10"]),
    (STAGE + "    batch_size: 1000000000\n", [":4:", "batch_size must be at most 65536"]),
    ("seeds: 1000000000\n" + STAGE, [":1:", "seeds must be at most 100"]),
    ("seed: 1\nseed: 2\n" + STAGE, [":2:", "duplicate key 'seed' (first on line 1)"]),
    (STAGE + "    lr: 0.1\n    lr: 0.2\n", [":5:", "duplicate key 'lr' (first on line 4)"]),
    ("data:\n  dev_rows: -5\n" + STAGE, ["data.dev_rows must be > 0, got -5"]),
], ids=["empty", "only-comment", "null", "no-stages", "seed-too-large", "seed-negative", "device-tpu",
        "temperature-nan", "temperature-huge", "lr-inf", "lr-huge", "alpha-nan", "alpha-huge", "batch-size-huge",
        "seeds-huge", "duplicate-key", "duplicate-stage-key", "dev-rows-negative"])
def test_bad_config_file(tmp_path, text, needles):
    config = tmp_path / "run.yaml"
    config.write_text(text, encoding="utf-8")
    fails(tmp_path, ["distill", "--config", str(config), "--out", str(tmp_path / "new")], str(config), *needles)


@pytest.mark.parametrize("args, needle", [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--seed", "99999999999999999999999"], "seed must be between 0 and 4294967295"),
    (["--train-rows", "0"], "Invalid value for '--train-rows': 0 is not in the range x>=1"),
], ids=["device-tpu", "seed-too-large", "train-rows-zero"])
def test_bad_run_flag(tmp_path, args, needle):
    (tmp_path / "t.tsv").write_text("tweet\tlabel\nina son\tpositive\nban ji\tnegative\nyau\tneutral\n", "utf-8")
    fails(tmp_path, ["run", "--quick", "--quiet", "--train", "t.tsv", "--test", "t.tsv", "--out", "new", *args],
          needle)


# ----------------------------------------------------------------------------- predict / evaluate


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("models") / "classifier")


def test_predict_output_is_the_input(classifier, tmp_path):
    src = tmp_path / "x.tsv"
    src.write_text("tweet\nina son\n", encoding="utf-8")
    fails(tmp_path, ["predict", "--model", str(classifier), "--input", str(src), "--output", str(src)],
          str(src), "is also the input")
    fails(tmp_path, ["predict", "--model", str(classifier), "--input", "x.tsv", "--output", "./sub/../x.tsv"],
          "is also the input")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_model_folder_without_id2label(classifier, tmp_path, command):
    folder = tmp_path / "no-labels"
    shutil.copytree(classifier, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["id2label"], config["label2id"]
    (folder / "config.json").write_text(json.dumps(config))
    (tmp_path / "x.tsv").write_text("tweet\tlabel\nina son\tpositive\n", encoding="utf-8")
    args = (["predict", "--input", "x.tsv", "--output", "y.tsv"] if command == "predict" else ["evaluate", "--test",
                                                                                                "x.tsv"])
    fails(tmp_path, [*args, "--model", str(folder)], str(folder), "config.json has no id2label")


def test_two_class_folder_without_id2label_still_predicts(tmp_path):
    """transformers leaves id2label out of config.json for 2 default labels: such a folder is fine."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    tok = tiny_tokenizer()
    config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=16, max_position_embeddings=34, pad_token_id=1)
    XLMRobertaForSequenceClassification(config).save_pretrained(tmp_path / "binary")
    tok.save_pretrained(tmp_path / "binary")
    assert "id2label" not in json.loads((tmp_path / "binary" / "config.json").read_text())
    (tmp_path / "x.tsv").write_text("tweet\nina son\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "afrocomet", "predict", "--model", "binary", "--input", "x.tsv",
                           "--output", "y.tsv"], capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "y.tsv").read_text().splitlines()[1].split("\t")[1] in {"LABEL_0", "LABEL_1"}
