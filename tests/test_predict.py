"""afrocomet.predict and `afrocomet predict / evaluate`: saved classifiers on TSV files, streamed."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import f1_score

import afrocomet.predict as P
from afrocomet.cli import cli, main
from afrocomet.data.afrisenti import read_tsv
from afrocomet.data.schema import LABELS
from afrocomet.errors import AfroCometError
from afrocomet.evaluate import compute_metrics, predict_labels, predict_logits
from afrocomet.models.build import build_model
from afrocomet.tokenizer import train_tokenizer
from helpers import train_briefly

OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine were ~30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hau(afrisenti_dir):
    return {split: read_tsv(afrisenti_dir / "hau" / f"{split}.tsv") for split in ("train", "test")}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, hau) -> Path:
    """A tiny trained-ish XLM-R classifier + its own 300-piece tokenizer, saved as a HF folder."""
    train = hau["train"][::14][:1000]  # the files are sorted by label: take rows across the file
    texts = [ex.text for ex in train]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    model = build_model("tiny-student", vocab_size=len(tokenizer), seed=0)  # 1 layer, hidden 32, 66 positions
    train_briefly(model, tokenizer, texts, [LABELS.index(ex.label) for ex in train], steps=150)
    out = tmp_path_factory.mktemp("model") / "student"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, hau) -> dict[str, Path]:
    """300 real test tweets: with labels and IDs (IDs not in sorted order), and text only."""
    d = tmp_path_factory.mktemp("inputs")
    test = hau["test"][::17][:300]
    ids = [f"hau_{(i * 7919) % 1000:04d}" for i in range(len(test))]
    return {
        "labelled": _write(d / "labelled.tsv", ["ID", "tweet", "label"],
                           [[i, ex.text, ex.label] for i, ex in zip(ids, test)]),
        "plain": _write(d / "plain.tsv", ["text"], [[ex.text] for ex in test]),
    }


def _read_output(path: Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["ID", "label"]
    return [r[0] for r in rows[1:]], [r[1] for r in rows[1:]]


# ----------------------------------------------------------------------------- loading


def test_load_classifier(model_dir):
    model, tokenizer, id2label = P.load_classifier(model_dir)
    assert id2label == dict(enumerate(LABELS))
    assert not model.training
    assert len(tokenizer) <= model.config.vocab_size
    assert P.default_max_length(model.config) == 64  # 66 positions - 2


# ----------------------------------------------------------------------------- predict_file


def test_predict_labelled_file_with_ids(model_dir, files, tmp_path):
    out = tmp_path / "sub" / "pred.tsv"
    result = P.predict_file(model_dir, files["labelled"], out, chunk_rows=64, device="cpu")
    examples = read_tsv(files["labelled"])
    ids, labels = _read_output(out)
    assert ids == [ex.id for ex in examples]  # input order, IDs from the input
    # Same predictions as one unchunked call on the whole file.
    model, tokenizer, _ = P.load_classifier(model_dir)
    expected, truncated = predict_labels(model, tokenizer, [ex.text for ex in examples], max_length=64)
    assert labels == [LABELS[i] for i in expected]
    assert len(set(labels)) >= 2, "the fixture model should not predict one class only"
    assert (result["n"], result["truncated"], result["max_length"]) == (300, truncated, 64)
    gold = [ex.label for ex in examples]
    assert result["metrics"] == compute_metrics(gold, labels)
    # The file scores on its own, with sklearn only, as predict_file said.
    assert f1_score(gold, labels, average="weighted") == pytest.approx(result["metrics"]["weighted_f1"], abs=1e-12)
    assert not [p for p in out.parent.iterdir() if p.name != "pred.tsv"]  # no temporary file left


def test_predict_plain_file_numbers_rows(model_dir, files, tmp_path):
    out = tmp_path / "pred.tsv"
    result = P.predict_file(model_dir, files["plain"], out, chunk_rows=100, device="cpu")
    ids, labels = _read_output(out)
    assert ids == [str(i) for i in range(300)]  # 0-based row numbers across chunks
    assert result["metrics"] is None and result["n"] == 300
    with_ids = tmp_path / "with_ids.tsv"
    P.predict_file(model_dir, files["labelled"], with_ids, device="cpu")
    assert labels == _read_output(with_ids)[1]  # same texts, same labels, whatever the columns


def test_truncation_count_and_max_length(model_dir, files, tmp_path):
    _, tokenizer, _ = P.load_classifier(model_dir)
    texts = [ex.text for ex in read_tsv(files["plain"], require_label=False)]
    long = sum(len(ids) > 8 for ids in tokenizer(texts)["input_ids"])
    result = P.predict_file(model_dir, files["plain"], tmp_path / "p.tsv", max_length=8, device="cpu")
    assert result["truncated"] == long > 0 and result["max_length"] == 8
    with pytest.raises(AfroCometError, match="between 2 and 64"):
        P.predict_file(model_dir, files["plain"], tmp_path / "q.tsv", max_length=65)
    assert not (tmp_path / "q.tsv").exists()


def test_stdin_to_stdout_via_cli(model_dir, files, tmp_path):
    expected = tmp_path / "expected.tsv"
    direct = P.predict_file(model_dir, files["labelled"], expected, device="cpu")
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", "--model", str(model_dir), "--input", "-", "--output", "-",
                                 "--batch-size", "16"], input=files["labelled"].read_bytes())
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == expected.read_bytes()
    assert f"predicted 300 texts, {direct['truncated']} truncated" in result.stderr
    assert "weighted F1" in result.stderr


# ----------------------------------------------------------------------------- streaming


class _CountingBackend:
    """Wraps a backend's predict to record the size of every call."""

    def __init__(self, backend: P.Backend):
        self.inner, self.calls = backend.predict, []
        backend.predict = self
        self.backend = backend

    def __call__(self, texts):
        self.calls.append(len(texts))
        return self.inner(texts)


def test_streams_in_chunks(model_dir, hau, tmp_path, monkeypatch):
    rows = [[ex.text] for ex in hau["train"][:10_000]]
    src = _write(tmp_path / "big.tsv", ["tweet"], rows)
    counters = []
    real_open = P.open_backend
    monkeypatch.setattr(P, "open_backend", lambda *a, **k: counters.append(_CountingBackend(real_open(*a, **k)))
                        or counters[-1].backend)
    out = tmp_path / "big_pred.tsv"
    result = P.predict_file(model_dir, src, out, chunk_rows=1024, batch_size=128, device="cpu")
    assert counters[0].calls == [1024] * 9 + [784]
    assert result["n"] == 10_000 and len(_read_output(out)[0]) == 10_000

    # A bad row near the end: the earlier chunks were predicted (streaming), the output never appears.
    rows[9_000] = [rows[9_000][0], "extra"]
    bad = _write(tmp_path / "bad.tsv", ["tweet"], rows)
    counters.clear()
    with pytest.raises(AfroCometError, match=rf"^{bad}:9002: expected 1 columns, got 2"):
        P.predict_file(model_dir, bad, tmp_path / "never.tsv", chunk_rows=1024, device="cpu")
    assert counters[0].calls == [1024] * 8
    assert not (tmp_path / "never.tsv").exists()


def _fake_backend(*args, **kwargs) -> P.Backend:
    def predict(texts):
        lengths = np.array([len(t) for t in texts])
        return np.stack([lengths % 3 == k for k in range(3)], axis=1).astype(np.float32), 0

    return P.Backend(predict=predict, labels=LABELS, max_length=64, kind="fake")


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_file(hau, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "open_backend", _fake_backend)
    texts = [[ex.text] for ex in hau["train"]]
    small = _write(tmp_path / "small.tsv", ["tweet"], texts[:2_000])
    big = _write(tmp_path / "big.tsv", ["tweet"], (texts * 2)[:20_000])  # 10x the rows, ~3 MB
    peak_small = _peak_bytes(lambda: P.predict_file("unused", small, tmp_path / "s.tsv", chunk_rows=500))
    peak_big = _peak_bytes(lambda: P.predict_file("unused", big, tmp_path / "b.tsv", chunk_rows=500))
    whole = _peak_bytes(lambda: read_tsv(big, require_label=False))
    assert peak_big < 1.5 * peak_small + 100_000, (peak_small, peak_big)
    assert whole > 5 * peak_big, (whole, peak_big)  # reading it whole would cost much more
    assert len(_read_output(tmp_path / "b.tsv")[0]) == 20_000


# ----------------------------------------------------------------------------- errors


def _bad_model(model_dir: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(model_dir, folder)
    return folder


BAD_INPUTS = {
    # name: (file bytes, expected message, line or None)
    "empty": (b"", "file is empty", None),
    "header_only": (b"ID\ttweet\n\n", "file has a header but no rows", None),
    "wrong_columns": (b"sentence\tlabel\nfoo\tpositive\n", "has no text column", 1),
    "extra_tab": (b"tweet\tlabel\nok\tpositive\nbad\ttext\tnegative\n", "expected 2 columns, got 3", 3),
    "not_utf8": (b"tweet\nfine\nbad \xff byte\n", "not valid UTF-8: byte 0xff", 3),
    "unknown_label": (b"tweet\tlabel\nfoo\tgood\n", "unknown label 'good'", 2),
    "blank_line": (b"tweet\nfoo\n\nbar\n", "blank line", 3),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, model_dir, tmp_path, capsys):
    data, message, line = BAD_INPUTS[case]
    src = tmp_path / f"{case}.tsv"
    src.write_bytes(data)
    out = tmp_path / "out.tsv"
    assert main(["predict", "--model", str(model_dir), "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    where = f"{src}:{line}: " if line else f"{src}: "
    assert err.startswith(f"afrocomet: error: {where}") and message in err and err.count("\n") == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_bad_model_folders(model_dir, files, tmp_path, capsys):
    no_weights = _bad_model(model_dir, tmp_path, "no_weights")
    (no_weights / "model.safetensors").unlink()
    no_tok = _bad_model(model_dir, tmp_path, "no_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / name).unlink()
    small_vocab = _bad_model(model_dir, tmp_path, "small_vocab")
    config = json.loads((small_vocab / "config.json").read_text())
    config["vocab_size"] = 100
    (small_vocab / "config.json").write_text(json.dumps(config))
    mlm = tmp_path / "mlm"
    build_model("tiny-student", "mlm", vocab_size=300, seed=0).save_pretrained(mlm)
    shutil.copy(model_dir / "tokenizer.json", mlm)
    cases = {tmp_path / "missing": "model folder not found", no_weights: "no weights (model.safetensors)",
             no_tok: "no tokenizer files", small_vocab: "tokenizer has 300 tokens but the model's embedding only 100",
             mlm: "not a sequence classifier"}
    out = tmp_path / "out.tsv"
    capsys.readouterr()  # drop save_pretrained's progress bar
    for folder, message in cases.items():
        assert main(["predict", "--model", str(folder), "--input", str(files["plain"]), "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"afrocomet: error: {folder}: ") and message in err and err.count("\n") == 1, err
        assert not out.exists()


def test_classifier_without_head_weights_is_refused(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _bad_model(model_dir, tmp_path, "headless")
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(AfroCometError, match="lacks weights the classifier needs .*classifier"):
        P.load_classifier(folder)


# ----------------------------------------------------------------------------- portability


RELOAD_SCRIPT = """
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, tsv = sys.argv[1], sys.argv[2]
model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
texts = [line.split("\\t")[1] for line in open(tsv, encoding="utf-8").read().splitlines()[1:]]
enc = tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
with torch.inference_mode():
    logits = model(**enc).logits
print(json.dumps({"logits": logits.tolist(), "labels": [model.config.id2label[i] for i in logits.argmax(-1).tolist()]}))
"""


def test_folder_reloads_with_transformers_alone(model_dir, files, tmp_path):
    proc = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(model_dir), str(files["labelled"])],
                          capture_output=True, text=True, env=OFFLINE_ENV, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    fresh = json.loads(proc.stdout)
    model, tokenizer, _ = P.load_classifier(model_dir)
    texts = [ex.text for ex in read_tsv(files["labelled"])]
    ours, _ = predict_logits(model, tokenizer, texts, max_length=64)
    np.testing.assert_allclose(np.array(fresh["logits"]), ours, atol=1e-4)
    out = tmp_path / "pred.tsv"
    P.predict_file(model_dir, files["labelled"], out, device="cpu")
    assert _read_output(out)[1] == fresh["labels"]


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_model(model_dir, files, afrisenti_dir):
    result = P.evaluate_model(model_dir, languages=["swa", "kin"], data_dir=afrisenti_dir, split="dev",
                              download=False, device="cpu")
    assert list(result["languages"]) == ["swa", "kin"] and result["split"] == "dev"
    model, tokenizer, _ = P.load_classifier(model_dir)
    for lang in ("swa", "kin"):
        examples = read_tsv(afrisenti_dir / lang / "dev.tsv")
        pred, truncated = predict_labels(model, tokenizer, [ex.text for ex in examples], max_length=64)
        got = result["languages"][lang]
        assert got == {**compute_metrics([ex.label for ex in examples], pred), "truncated": truncated}
    mean = np.mean([result["languages"][lang]["weighted_f1"] for lang in ("swa", "kin")])
    assert result["average"]["weighted_f1"] == pytest.approx(mean)

    custom = P.evaluate_model(model_dir, test=files["labelled"], device="cpu")
    assert list(custom["languages"]) == ["labelled"] and custom["test"] == str(files["labelled"])
    assert custom["languages"]["labelled"]["n"] == 300


def test_evaluate_cli_writes_json(model_dir, afrisenti_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--model", str(model_dir), "-l", "swa", "--data-dir", str(afrisenti_dir), "--split", "dev",
            "--no-download", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert "swa" in printed and "average" in printed and f"{100 * saved['average']['weighted_f1']:.2f}" in printed
    assert saved["languages"]["swa"]["n"] == 453
    assert main(["evaluate", "--model", str(model_dir), "--test", str(tmp_path / "nope.tsv")]) == 2
    assert "nope.tsv: file not found" in capsys.readouterr().err
