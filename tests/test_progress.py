"""Progress without a terminal (CI, nohup, a log file): plain lines, never carriage returns."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from afrocomet.distill import steplog
from afrocomet.distill.steplog import LINE_PERCENT, LineProgress

STAGE = r"""
import sys
import torch
sys.path.insert(0, {tests!r})
from helpers import WORDS, tiny_tokenizer
from afrocomet.config import StageConfig
from afrocomet.data.batching import encode
from afrocomet.distill import steplog
from afrocomet.distill.trainer import train_stage
from afrocomet.models.build import build_model

steplog.LINE_SECONDS = {seconds}
torch.set_num_threads(1)
tok = tiny_tokenizer()
texts = [" ".join(WORDS[i % 7:i % 7 + 4]) for i in range(64)]
data = encode(tok, texts, 16, labels=[i % 3 for i in range(64)])
model = build_model("tiny-student", "classification", vocab_size=len(tok), seed=0)
cfg = StageConfig(name="tiny-stage", kind="student-finetune", epochs=100, max_steps={steps}, batch_size=8, progress_every=5,
                  patience=0, checkpoint_every=0)
train_stage(cfg, model, data, tokenizer=tok, progress=True)
print("done")
"""


def _run_stage(tmp_path: Path, steps: int, seconds: float) -> str:
    """A tiny stage in a fresh process whose stderr is a file (not a terminal); returns that file's text."""
    err = tmp_path / "stderr.log"
    script = STAGE.format(tests=str(Path(__file__).parent), seconds=seconds, steps=steps)
    with open(err, "wb") as fh:
        proc = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=fh, timeout=300)
    text = err.read_bytes().decode("utf-8")
    assert proc.returncode == 0 and proc.stdout.strip().endswith(b"done"), text[-2000:]
    return text


def test_a_stage_logged_to_a_file_writes_lines_not_carriage_returns(tmp_path):
    text = _run_stage(tmp_path, steps=200, seconds=steplog.LINE_SECONDS)
    assert "\r" not in text
    lines = [line for line in text.splitlines() if "tiny-stage" in line]
    assert 1 <= len(lines) <= 100 // LINE_PERCENT, text  # 200 steps: at most one line per 10%, and the end
    assert "tiny-stage: 200/200 steps in " in lines[-1] and "total " in lines[-1]


def test_every_ten_percent_gets_a_line_when_the_stage_is_slow_enough(tmp_path):
    text = _run_stage(tmp_path, steps=200, seconds=0)  # no minimum time between lines
    assert "\r" not in text
    lines = [line for line in text.splitlines() if "tiny-stage" in line]
    assert [line.split("(")[1].split(")")[0] for line in lines[:-1]] == [f"{p}%" for p in range(10, 100, 10)]
    assert "200/200 steps in" in lines[-1] and len(lines) == 10


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_line_progress_keeps_lines_apart_in_time_and_says_an_early_stop():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(1000, 0, "stage2", stream=out, clock=clock)
    for step in range(1, 401):
        clock.now = step * 0.05  # 5 s per 10%: under LINE_SECONDS, so a line every other 10%
        bar.update(1)
        bar.set_postfix({"total": f"{1 / step:.3f}"})
    bar.close()  # stopped early at step 400 (e.g. by early stopping)
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1].split(",")[0] for line in lines] == \
           ["stage2: 200/1000 steps (20%)", "stage2: 400/1000 steps (40%)",
            "stage2: 400/1000 steps (stopped early) in 20s; total 0.003"]
    assert "~" in lines[0] and "s left" in lines[0]


def test_no_end_line_while_an_exception_unwinds():
    out = io.StringIO()
    bar = LineProgress(10, 0, "s", stream=out)
    with pytest.raises(KeyboardInterrupt):
        try:
            raise KeyboardInterrupt
        finally:
            bar.close()
    assert out.getvalue() == ""


def test_a_terminal_keeps_the_tqdm_bar(monkeypatch):
    monkeypatch.setattr(steplog, "_terminal", lambda: True)
    bar = steplog.progress_bar(10, 0, "s", True)
    assert not isinstance(bar, LineProgress)
    bar.close()
    monkeypatch.setattr(steplog, "_terminal", lambda: False)
    assert isinstance(steplog.progress_bar(10, 0, "s", True), LineProgress)
    assert not isinstance(steplog.progress_bar(10, 0, "s", False), LineProgress)  # --quiet: nothing at all
