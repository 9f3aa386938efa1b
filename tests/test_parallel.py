"""Two processes (accelerate launch, gloo on CPU) with the global batch split give the losses and dev
scores of one process with the same global batch.

Tolerance: relative 1e-4 on every logged loss, 1e-3 on dev scores. The gradients are the same sums
taken in another order (each process sums its rows, then the all-reduce adds the two halves), so
they differ in the last float32 bits, and Adam carries that through the steps. Dropout is off in
these models: with it, each process would draw other masks than the single process does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from afrocomet.cli import main
from helpers import tiny_swa_run_config

pytestmark = pytest.mark.usefixtures("one_thread")

STAGE = dict(batch_size=16, lr=0.002, progress_every=3, max_steps=6, eval_every=3, patience=0)


@pytest.fixture(scope="module")
def no_dropout_config(afrisenti_dir, tmp_path_factory) -> Path:
    """A dropout-free tiny teacher and student saved as local folders, the teacher's tokenizer, swa data."""
    rows = {"train": 400, "dev": 120, "test": 60}
    return tiny_swa_run_config(tmp_path_factory.mktemp("parallel"), afrisenti_dir, rows, STAGE, {"ablations": False},
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _logs(out: Path, stage: str) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / stage / "log.jsonl").read_text().splitlines()]


def test_two_processes_match_one(no_dropout_config, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["distill", "--config", str(no_dropout_config), "--quiet", "--out", str(one)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "afrocomet", "distill", "--config", str(no_dropout_config),
                           "--out", str(two), "--num-processes", "2"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the main process tells the story, once; no library line (DDP's C++ reducer warns per process)
    assert proc.stderr.count("stage stage2 (distill-task) starts") == 1, proc.stderr[-3000:]
    assert "[rank" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr[-3000:]
    assert not any((two / "logs").glob("*/log.jsonl.*"))  # one writer
    for stage in ("teacher-finetune", "stage1", "stage2"):
        ours, theirs = _logs(two, stage), _logs(one, stage)
        assert [r["step"] for r in ours] == [r["step"] for r in theirs]  # same steps, same dev evaluations
        for a, b in zip(ours, theirs):
            for key in a:
                if key == "dev_score":
                    assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-3), (stage, a["step"], key)
                elif key not in ("step", "epoch"):
                    assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (stage, a["step"], key)
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    for system in ("teacher", "student"):
        assert r2["average"][system]["weighted_f1"] == pytest.approx(r1["average"][system]["weighted_f1"], abs=0.02)
