"""afrocomet.export and `afrocomet export`: ONNX (fp32, int8) with parity, and ONNX folders in predict/evaluate."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import afrocomet.export as E  # noqa: E402
import afrocomet.predict as P  # noqa: E402
from afrocomet.cli import cli, main  # noqa: E402
from afrocomet.data.afrisenti import read_tsv  # noqa: E402
from afrocomet.errors import AfroCometError  # noqa: E402

from helpers import tiny_classifier_dir, tiny_onnx_dir  # noqa: E402,F401  (session fixtures)


@pytest.fixture(scope="module")
def test_file(tmp_path_factory, afrisenti_dir) -> Path:
    """200 real Hausa test tweets with labels and IDs."""
    rows = read_tsv(afrisenti_dir / "hau" / "test.tsv")[::26][:200]
    path = tmp_path_factory.mktemp("tsv") / "hau200.tsv"
    path.write_text("ID\ttweet\tlabel\n" + "".join(f"h{i}\t{ex.text}\t{ex.label}\n" for i, ex in enumerate(rows)),
                    encoding="utf-8")
    return path


def _labels_of(model_dir, texts, **kwargs) -> np.ndarray:
    backend = P.open_backend(model_dir, device="cpu", **kwargs)
    return backend.predict(texts)[0].argmax(-1)


def test_export_folder_and_parity(tiny_onnx_dir, tiny_classifier_dir, afrisenti_dir, one_thread):
    names = {p.name for p in tiny_onnx_dir.iterdir()}
    assert {"model.onnx", "model.int8.onnx", "config.json", "tokenizer.json", "parity.json"} <= names
    assert "model.safetensors" not in names
    parity = json.loads((tiny_onnx_dir / "parity.json").read_text())
    assert parity["texts"] == {"source": "AfriSenti test split", "groups": ["hau"], "n": 300, "max_length": 64}
    assert parity["fp32"]["n"] == 300 and parity["fp32"]["ok"] is True
    assert 0 <= parity["fp32"]["max_abs_logit_diff"] <= E.FP32_TOLERANCE
    assert parity["fp32"]["label_agreement"] == 1.0
    q = parity["int8"]
    assert q["file"] == "model.int8.onnx" and q["goal"] == 0.99 and q["ok"] == (q["label_agreement"] >= 0.99)
    assert q["mode"] == "static" and q["calibration"] == {"source": "AfriSenti train split", "n": 500}
    assert parity["ok"] == q["ok"] and q["max_abs_logit_diff"] > parity["fp32"]["max_abs_logit_diff"]
    assert json.loads((tiny_onnx_dir / "config.json").read_text())["id2label"] == {
        "0": "negative", "1": "neutral", "2": "positive"}
    # The recorded numbers are those of running each folder on the same 300 texts.
    groups, source = E.parity_texts(["hau"], afrisenti_dir, max_texts=300)
    texts = groups["hau"]
    assert source == "AfriSenti test split" and len(texts) == 300
    reference = _labels_of(tiny_classifier_dir, texts)
    assert len(set(reference.tolist())) >= 2, "the fixture model should not predict one class only"
    assert (_labels_of(tiny_onnx_dir, texts) == reference).all()
    int8 = _labels_of(tiny_onnx_dir, texts, onnx_file="model.int8.onnx")
    assert (int8 == reference).mean() == pytest.approx(q["label_agreement"], abs=1e-12)


def test_static_int8_logits_do_not_depend_on_the_batch_and_dynamic_stays_a_choice(tiny_onnx_dir, tiny_classifier_dir,
                                                                                   afrisenti_dir, tmp_path, one_thread):
    """Static int8 (the default): each text's logits are the same alone and in a padded batch of 64, beside
    other texts; calibrated on training tweets, never the parity (test) ones. Dynamic int8: `int8_mode`."""
    from afrocomet.quantize import calibration_texts

    texts = E.parity_texts(["hau"], afrisenti_dir, max_texts=200)[0]["hau"]
    together = P.open_backend(tiny_onnx_dir, device="cpu", onnx_file="model.int8.onnx", batch_size=64).predict(texts)[0]
    alone = P.open_backend(tiny_onnx_dir, device="cpu", onnx_file="model.int8.onnx", batch_size=1).predict(texts)[0]
    np.testing.assert_array_equal(alone, together)
    calibration, source = calibration_texts(["hau"], afrisenti_dir, {}, "unused")
    assert source == "AfriSenti train split" and len(calibration) == 500 and not set(calibration) & set(texts)
    dynamic = E.export_onnx(tiny_classifier_dir, tmp_path / "dynamic", int8=True, int8_mode="dynamic",
                            languages=["hau"], data_dir=afrisenti_dir, max_texts=100)
    assert dynamic["int8"]["mode"] == "dynamic" and "calibration" not in dynamic["int8"]
    assert (tmp_path / "dynamic" / "model.int8.onnx").read_bytes() != (tiny_onnx_dir / "model.int8.onnx").read_bytes()


def test_predict_and_evaluate_through_onnx(tiny_onnx_dir, tiny_classifier_dir, test_file, tmp_path, one_thread):
    torch_out, onnx_out, int8_out = tmp_path / "torch.tsv", tmp_path / "onnx.tsv", tmp_path / "int8.tsv"
    expected = P.predict_file(tiny_classifier_dir, test_file, torch_out, device="cpu")
    result = P.predict_file(tiny_onnx_dir, test_file, onnx_out, device="cpu")
    assert onnx_out.read_bytes() == torch_out.read_bytes()  # same IDs, same labels, same format
    assert result == {**expected, "output": str(onnx_out)}
    assert P.open_backend(tiny_onnx_dir).kind == "onnx" and P.open_backend(tiny_classifier_dir).kind == "pytorch"
    runner = CliRunner()
    cli_result = runner.invoke(cli, ["predict", "--model", str(tiny_onnx_dir), "--onnx-file", "model.int8.onnx",
                                     "--input", str(test_file), "--output", str(int8_out)])
    assert cli_result.exit_code == 0, cli_result.output
    rows = int8_out.read_text().splitlines()
    assert rows[0] == "ID\tlabel" and len(rows) == 201
    agree = np.mean([a == b for a, b in zip(rows, torch_out.read_text().splitlines())])
    assert agree >= 0.9  # int8 labels mostly agree; parity.json has the exact figure
    metrics_t = P.evaluate_model(tiny_classifier_dir, test=test_file, device="cpu")
    metrics_o = P.evaluate_model(tiny_onnx_dir, test=test_file, device="cpu")
    assert metrics_o["languages"] == metrics_t["languages"]


def test_onnx_folder_carries_model_max_length(tiny_onnx_dir, tiny_classifier_dir, tmp_path, one_thread):
    """The source folder was saved without a limit; the export records the model's (66 positions - 2)."""
    from transformers import AutoTokenizer

    source = json.loads((tiny_classifier_dir / "tokenizer_config.json").read_text())
    assert source.get("model_max_length", 10**30) > 10**6  # transformers' "no limit"
    assert json.loads((tiny_onnx_dir / "tokenizer_config.json").read_text())["model_max_length"] == 64
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_onnx_dir))
    long_text = " ".join(["sannu da zuwa"] * 700)  # well over 2,000 pieces
    assert len(tokenizer(long_text)["input_ids"]) > 2000
    assert len(tokenizer(long_text, truncation=True)["input_ids"]) == 64
    tsv = tmp_path / "long.tsv"
    tsv.write_text(f"tweet\n{long_text}\n", encoding="utf-8")
    result = P.predict_file(tiny_onnx_dir, tsv, tmp_path / "out.tsv", device="cpu")
    assert result["n"] == 1 and result["truncated"] == 1 and result["max_length"] == 64


def test_export_cli_and_fallback_texts(tiny_classifier_dir, tmp_path, monkeypatch, one_thread):
    monkeypatch.delenv("AFROCOMET_DATA", raising=False)
    monkeypatch.setenv("AFROCOMET_CACHE", str(tmp_path / "empty-cache"))  # AfriSenti is not found
    out = tmp_path / "exported"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "--model", str(tiny_classifier_dir), "--onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "built-in sample sentences" in result.output
    parity = json.loads((out / "parity.json").read_text())
    assert parity["texts"]["n"] == len(E.SAMPLE_TEXTS) and "int8" not in parity and parity["ok"] is True
    assert not (out / "model.int8.onnx").exists()
    # An earlier export is replaced; given texts win over AfriSenti.
    given = tmp_path / "given.tsv"
    given.write_text("text\nina son wannan\nban ji dadin ba\n", encoding="utf-8")
    result = runner.invoke(cli, ["export", "--model", str(tiny_classifier_dir), "--onnx", "--out", str(out),
                                 "--texts", str(given)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "parity.json").read_text())["texts"]["n"] == 2


def test_fp32_mismatch_writes_nothing(tiny_classifier_dir, tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(E, "FP32_TOLERANCE", -1.0)
    with pytest.raises(AfroCometError, match="fp32 ONNX logits differ"):
        E.export_onnx(tiny_classifier_dir, tmp_path / "out", texts=["ina son wannan", "yau"])
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary sibling


def _cli_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("afrocomet: error: ")
    return err


def test_bad_input_exit_2_one_line_nothing_written(tiny_classifier_dir, tiny_onnx_dir, tmp_path, capsys):
    out = tmp_path / "out"
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_classifier_dir / name, no_weights / name)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    cases = {
        "model folder not found": ["export", "--model", str(tmp_path / "missing"), "--onnx", "--out", str(out)],
        "no weights": ["export", "--model", str(no_weights), "--onnx", "--out", str(out)],
        "--onnx": ["export", "--model", str(tiny_classifier_dir), "--int8", "--out", str(out)],
        "holds other files": ["export", "--model", str(tiny_classifier_dir), "--onnx", "--out", str(other)],
        "is also the model folder": ["export", "--model", str(tiny_classifier_dir), "--onnx", "--out",
                                str(tiny_classifier_dir)],
    }
    for expected, argv in cases.items():
        assert expected in _cli_error(argv, capsys), expected
    assert not out.exists() and (other / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-weights", "other"]  # no temporary folder left
    pred = tmp_path / "pred.tsv"
    src = tmp_path / "in.tsv"
    src.write_text("text\nina son\n", encoding="utf-8")
    err = _cli_error(["predict", "--model", str(tiny_onnx_dir), "--onnx-file", "missing.onnx", "--input", str(src),
                      "--output", str(pred)], capsys)
    assert "ONNX file not found" in err and not pred.exists()


def test_cap_spreads_texts_over_groups():
    groups = {"a": [f"a{i}" for i in range(90)], "b": [f"b{i}" for i in range(10)]}
    capped = E._cap(groups, 20)
    assert [len(v) for v in capped.values()] == [18, 2]
    assert capped["a"][0] == "a0" and capped["a"][-1] == "a89"  # evenly spaced, ends included
    assert E._cap(groups, None) is groups
