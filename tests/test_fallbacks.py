"""Issue 13 item 10: no silent fallbacks. Each does what was asked or says once, in one line, what it
did instead: the teacher cache's layer lookup, empty masked-LM batches, the ONNX parity texts, the
doctor's small copies, and the log of a step that accumulated several micro-steps."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from afrocomet.config import StageConfig
from afrocomet.distill.checkpoint import LoopState
from afrocomet.distill.steplog import StepLog
from helpers import WORDS, tiny_classifier_dir, tiny_tokenizer  # noqa: F401  (fixture)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_cached_layers_says_it_ignores_an_unusable_layer_map(caplog):
    """Without an attention term a layer map past the teacher's layers does not stop the stage, but
    the user is told once that it is not used (it was swallowed before)."""
    from afrocomet.distill import cache
    from afrocomet.models.presets import get_preset

    student, teacher = (get_preset(p).to_config(vocab_size=50) for p in ("tiny-student", "tiny-teacher"))
    cfg = StageConfig(name="kd-only", kind="distill-task", attention_weight=0.0, layer_map=[[0, 99]])
    cache._SAID.clear()
    with caplog.at_level(logging.WARNING, logger="afrocomet"):
        assert cache.cached_layers(cfg, student, teacher) == []
        assert cache.cached_layers(cfg, student, teacher) == []  # a second student / seed: said once
    said = _warnings(caplog)
    assert len(said) == 1 and "stage 'kd-only'" in said[0] and "not used" in said[0] and "\n" not in said[0]
    with_attention = StageConfig(name="hybrid", kind="distill-task", layer_map=[[0, 99]])
    with pytest.raises(Exception, match="99"):  # with an attention term it is an error, as before
        cache.cached_layers(with_attention, student, teacher)


def test_empty_masked_lm_batches_are_counted_and_said(caplog):
    """A masked-LM stage on tiny texts at a low masking rate: the batches with nothing masked are
    skipped, counted in StageResult.skipped_batches and said in one warning line."""
    from afrocomet.data.batching import encode
    from afrocomet.distill.trainer import train_stage
    from afrocomet.models.build import build_model

    tok = tiny_tokenizer()
    texts = [" ".join(WORDS[i:i + 2]) for i in range(len(WORDS) - 1)]
    data = encode(tok, texts, 16)
    model = build_model("tiny-student", "mlm", vocab_size=len(tok), seed=0)
    cfg = StageConfig(name="mlm", kind="teacher-pretrain", batch_size=1, max_steps=6, mlm_probability=0.1,
                      warmup_ratio=0.0, progress_every=1000, checkpoint_every=0)
    with caplog.at_level(logging.WARNING, logger="afrocomet"):
        result = train_stage(cfg, model, data, tokenizer=tok, progress=False, seed=0)
    assert result.steps == 6 and result.skipped_batches > 0
    said = [m for m in _warnings(caplog) if "no token was masked" in m]
    assert len(said) == 1 and f"skipped {result.skipped_batches} masked-LM batch" in said[0]
    assert result.to_dict()["skipped_batches"] == result.skipped_batches  # into results.json's stages


def test_accumulated_step_logs_the_mean_of_its_micro_steps(tmp_path):
    """log.jsonl's line of an optimizer step that applied 3 micro-steps holds each term's mean over
    them (it held only the last one); the per-micro-step history (first/last windows) is unchanged."""
    log = StepLog(tmp_path, LoopState(), resumed=False, name="s", total_steps=2, progress_every=1, progress=False)
    for value in (1.0, 2.0, 6.0):
        log.add({"kd": value, "total": 2 * value})
    log.step(1, 0, 1e-3, 1.0)
    log.add({"kd": 10.0, "total": 20.0})
    log.step(2, 0, 1e-3, 1.0)
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["kd"], r["total"]) for r in lines] == [(3.0, 6.0), (10.0, 20.0)]
    assert log.history["kd"] == [1.0, 2.0, 6.0, 10.0]


def test_doctor_says_it_drops_the_layer_map_on_its_small_copies(afrisenti_dir, recwarn):
    """The doctor's small copies (here 1 student, 1 teacher layer) cannot take the stage's layer map
    0:1; it uses the uniform map there and says so once (it dropped it silently before)."""
    from afrocomet.config import DataConfig, ModelConfig, RunConfig
    from afrocomet.distill.doctor import run_doctor

    config = RunConfig(data=DataConfig(languages=["hau"], data_dir=str(afrisenti_dir), download=False, max_length=32),
                       model=ModelConfig(teacher="tiny-teacher", student="tiny-student", vocab_size=300),
                       stages=[StageConfig(name="s2", kind="distill-task", batch_size=8, layer_map=[[0, 1]])])
    checks = run_doctor(config, device="cpu", sample=64, steps=2, small_layers=(1, 1))
    said = [str(w.message) for w in recwarn if "layer map" in str(w.message)]
    assert len(said) == 1 and "stage 's2'" in said[0] and "does not fit the small copies" in said[0], said
    assert "uniform map" in said[0] and "\n" not in said[0] and checks


def test_export_parity_fallback_says_so_in_one_line(tiny_classifier_dir, tmp_path):  # noqa: F811
    """Without AfriSenti or --texts the parity check runs on the built-in sentences and says so: one
    `afrocomet: warning:` line on the command's real stderr."""
    env = {k: v for k, v in ENV.items() if k != "AFROCOMET_DATA"}
    env["AFROCOMET_CACHE"] = str(tmp_path / "empty-cache")
    proc = subprocess.run([sys.executable, "-m", "afrocomet", "export", "--model", str(tiny_classifier_dir), "--onnx",
                           "--out", str(tmp_path / "onnx")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "built-in sample sentences" in line]
    assert len(warnings) == 1 and warnings[0].startswith("afrocomet: warning: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "onnx" / "parity.json").read_text())["texts"]["source"].startswith("built-in")
