"""`afrocomet bench` / `afrocomet.bench.run_bench`: presets and folders side by side on real tweets."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import afrocomet.bench.command as BC  # noqa: E402
import afrocomet.bench.timing as BT  # noqa: E402
from afrocomet.cli import cli, main  # noqa: E402

from helpers import tiny_classifier_dir, tiny_onnx_dir  # noqa: E402,F401  (session fixtures)

RATIO_KEYS = {"latency", "latency_p95", "parameters", "non_embedding_parameters", "disk_bytes", "memory_bytes",
              "throughput"}
COLUMN_KEYS = {"latency", "throughput", "parameters", "disk_bytes", "memory_bytes", "activation_peak_bytes",
               "model", "backend", "device", "max_length", "tokens"}


def test_bench_json_preset_folder_and_onnx(tiny_classifier_dir, tiny_onnx_dir, afrisenti_dir, one_thread):
    result = CliRunner().invoke(cli, ["bench", "--teacher", "tiny-teacher", "--student", str(tiny_classifier_dir),
                                      "--onnx", str(tiny_onnx_dir), "--texts", "8", "-l", "hau", "--data-dir",
                                      str(afrisenti_dir), "--threads", "1", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    cols = out["columns"]
    assert list(cols) == ["teacher", "student", "onnx-fp32", "onnx-int8"]
    for col in cols.values():
        assert COLUMN_KEYS <= set(col)
        assert col["latency"]["n"] == 8 and col["latency"]["batch_size"] == 1 and col["latency"]["threads"] == 1
        assert col["throughput"]["batch_size"] == 32 and col["throughput"]["texts_per_s"] > 0
        assert col["memory_bytes"] > 0 and col["max_length"] == 64
    assert cols["teacher"]["model"] == "preset tiny-teacher (random weights)"
    assert cols["onnx-int8"]["backend"] == "onnxruntime int8" and cols["student"]["backend"] == "pytorch fp32"
    assert cols["onnx-int8"]["disk_bytes"] < cols["onnx-fp32"]["disk_bytes"]
    # The preset borrows the folder's tokenizer, so every column sees the same tokens.
    assert out["tokenizer"].startswith("300-piece tokenizer of") and len({c["tokens"]["mean"] for c in cols.values()}) == 1
    assert out["texts"]["n"] == 8 and "AfriSenti test (hau)" in out["texts"]["source"]
    assert set(out["ratios"]) == {"student", "onnx-fp32", "onnx-int8"}
    for name, r in out["ratios"].items():
        assert set(r) == RATIO_KEYS
        assert r["parameters"] == pytest.approx(cols["teacher"]["parameters"] / cols[name]["parameters"])
        assert r["latency"] == pytest.approx(cols["teacher"]["latency"]["p50_ms"] / cols[name]["latency"]["p50_ms"])
        assert r["throughput"] == pytest.approx(cols[name]["throughput"]["texts_per_s"]
                                                / cols["teacher"]["throughput"]["texts_per_s"])


def test_bench_two_presets_table(afrisenti_dir, monkeypatch, one_thread):
    monkeypatch.setattr(BC, "TOKENIZER_TEXTS", 800)  # the tokenizer is trained here: keep it quick
    result = CliRunner().invoke(cli, ["bench", "--teacher", "tiny-teacher", "--student", "tiny-student", "--texts", "6",
                                      "-l", "hau", "--data-dir", str(afrisenti_dir), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "x faster p50" in result.output and "x smaller disk" in result.output
    assert "unigram tokenizer trained here on 800 AfriSenti train tweets (hau)" in " ".join(result.output.split())


def test_bench_compile_columns(afrisenti_dir, monkeypatch, one_thread):
    """--compile adds the two models again through torch.compile, and compares those two with each other
    (compilation itself is tested in test_bench.py; here it is replaced by the eager model, to stay quick)."""
    monkeypatch.setattr(BC, "TOKENIZER_TEXTS", 800)
    monkeypatch.setattr(BT, "compiled", lambda model: model)
    result = CliRunner().invoke(cli, ["bench", "--teacher", "tiny-teacher", "--student", "tiny-student", "--texts", "4",
                                      "-l", "hau", "--data-dir", str(afrisenti_dir), "--threads", "1", "--compile",
                                      "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    cols = out["columns"]
    assert list(cols) == ["teacher", "student", "teacher-compiled", "student-compiled"]
    assert cols["student-compiled"]["backend"] == "pytorch fp32 compiled" and cols["student"]["backend"] == "pytorch fp32"
    r = out["ratios_compiled"]
    assert r["latency"] == pytest.approx(cols["teacher-compiled"]["latency"]["p50_ms"]
                                         / cols["student-compiled"]["latency"]["p50_ms"])


def test_bench_bad_input(tiny_classifier_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = {
        "neither a preset": ["bench", "--teacher", str(tmp_path / "missing"), "--student", "tiny-student"],
        "not an ONNX folder": ["bench", "--teacher", "tiny-teacher", "--student", "tiny-student", "--onnx",
                               str(tmp_path / "empty")],
        "pass it as --onnx": ["bench", "--teacher", "tiny-teacher", "--student", str(tmp_path / "onnx-like")],
    }
    (tmp_path / "onnx-like").mkdir()
    (tmp_path / "onnx-like" / "model.onnx").write_bytes(b"")
    for expected, argv in cases.items():
        assert main([*argv, "--data-dir", str(tmp_path / "no-data")]) == 2, expected
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err


def test_every_onnx_file_of_the_folder_is_a_column(tmp_path):
    """model.onnx is onnx-fp32; each other model.TAG.onnx is onnx-TAG (benchmarks/latency.py puts a dynamic
    int8 file beside export's static one); external-data files are not columns."""
    from afrocomet.bench import onnx_columns

    for name in ("model.onnx", "model.int8.onnx", "model.int8-dynamic.onnx", "model.onnx.data", "other.onnx"):
        (tmp_path / name).write_bytes(b"")
    assert onnx_columns(tmp_path) == [("onnx-fp32", "model.onnx"), ("onnx-int8", "model.int8.onnx"),
                                      ("onnx-int8-dynamic", "model.int8-dynamic.onnx")]
