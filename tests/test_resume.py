"""Exact resume: a run killed with SIGKILL in stage 1 and again in stage 2, then resumed, ends
bitwise equal (CPU, one thread) to the same run never interrupted; the loop alone resumes exactly
with gradient accumulation, a trained projection matcher and learned loss weights; refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from afrocomet.cli import main
from afrocomet.config import StageConfig, validate_stage
from afrocomet.errors import AfroCometError
from helpers import wait_until

pytestmark = pytest.mark.usefixtures("one_thread")

# a slice of Swahili AfriSenti as the user's own TSVs (evaluation and baselines stay fast), tiny
# presets, stages long enough (60 steps over several epochs, a checkpoint every 4) that a kill lands
# inside the stage; dev evaluation every 10 steps so checkpoints carry early-stopping state
ROWS = {"train": 600, "dev": 150, "test": 150}
STAGE = dict(batch_size=16, lr=0.002, progress_every=4)
TINY = {
    "seed": 0, "device": "cpu", "quick": True, "ablations": False,
    "data": {"languages": ["swa"], "download": False, "max_length": 32},
    "model": {"teacher": "tiny-teacher", "student": "tiny-student", "vocab_size": 400},
    "stages": [
        {"name": "teacher-pretrain", "kind": "teacher-pretrain", "max_steps": 4, **STAGE},
        {"name": "teacher-finetune", "kind": "teacher-finetune", "max_steps": 4, **STAGE},
        {"name": "stage1", "kind": "distill-mlm", "max_steps": 60, "eval_every": 10, "checkpoint_every": 4, **STAGE},
        {"name": "stage2", "kind": "distill-task", "max_steps": 60, "eval_every": 10, "checkpoint_every": 4,
         "patience": 5, **STAGE},
    ],
}


@pytest.fixture(scope="module")
def tiny_config(afrisenti_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume_cfg")
    data = dict(TINY["data"])
    for split, rows in ROWS.items():
        lines = (afrisenti_dir / "swa" / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        stride = max(1, (len(lines) - 1) // rows)  # the files are sorted by label: every k-th row keeps all labels
        (folder / f"{split}.tsv").write_text("".join(lines[:1] + lines[1::stride][:rows]), encoding="utf-8")
        data[split] = str(folder / f"{split}.tsv")
    path = folder / "tiny.yaml"
    config = {**TINY, "data": data}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(tiny_config, tmp_path_factory) -> Path:
    """The same run, never interrupted (in this process: one thread, like the subprocesses)."""
    out = tmp_path_factory.mktemp("resume_ref") / "run"
    assert main(["run", "--config", str(tiny_config), "--quiet", "--out", str(out)]) == 0
    return out


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "w") as fh:  # a file, not a pipe: progress bars cannot fill a buffer and block the child
        return subprocess.Popen([sys.executable, "-m", "afrocomet", *args], env=env, stdout=fh, stderr=subprocess.STDOUT)


def _kill_when(proc: subprocess.Popen, folder: Path, pattern: str, log: Path, timeout: float = 120) -> None:
    """SIGKILL the run as soon as a complete checkpoint matching `pattern` exists."""
    wait_until(proc, lambda: any(folder.glob(pattern)), timeout, poll=0.005,
               output=lambda: f"the run ended before {pattern}: {log.read_text()[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_twice_then_resumed_is_bitwise_equal(reference, tiny_config, tmp_path):
    out, partial = tmp_path / "run", tmp_path / "run.partial"
    state = partial / "resume"

    proc = _start(["run", "--config", str(tiny_config), "--quiet", "--out", str(out)], tmp_path / "1.log")
    _kill_when(proc, state, "checkpoints/stage1/step-*/state.json", tmp_path / "1.log")
    assert not out.exists() and (partial / "config.yaml").is_file()
    assert (state / "stages" / "teacher-finetune" / "result.json").is_file()
    assert not (state / "stages" / "stage1").exists()  # killed inside stage 1

    proc = _start(["run", "--resume", str(out)], tmp_path / "2.log")
    _kill_when(proc, state, "checkpoints/stage2/step-*/state.json", tmp_path / "2.log")
    assert "stage stage1 resumes from resume/checkpoints/stage1/step-" in (tmp_path / "2.log").read_text()
    assert (state / "stages" / "stage1" / "result.json").is_file() and not (state / "checkpoints" / "stage1").exists()
    assert not (state / "stages" / "stage2").exists()  # killed inside stage 2
    assert len(list((state / "checkpoints" / "stage2").glob("step-*"))) <= 2  # keep_checkpoints

    proc = _start(["run", "--resume", str(partial), "--quiet"], tmp_path / "3.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "3.log").read_text()[-2000:]
    assert not partial.exists() and not (out / "resume").exists()

    for name in ("student", "teacher"):
        ours, theirs = load_file(out / name / "model.safetensors"), load_file(reference / name / "model.safetensors")
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (out, reference))
    for key in ("languages", "average", "retention", "labels", "systems"):
        assert ours[key] == theirs[key], key
    for name, stage in theirs["stages"].items():  # all but the wall-clock seconds
        assert {**ours["stages"][name], "seconds": 0} == {**stage, "seconds": 0}, name
    for name in ("teacher-pretrain", "stage1", "stage2"):  # every step's losses, lr, dev score
        assert (out / "logs" / name / "log.jsonl").read_bytes() == (reference / "logs" / name / "log.jsonl").read_bytes()


# -- the loop alone ----------------------------------------------------------------------------


def test_loop_resumes_exactly_with_accumulation_projection_and_learned_weights(tmp_path):
    from afrocomet.data.batching import encode
    from afrocomet.distill.checkpoint import list_checkpoints
    from afrocomet.distill.trainer import train_stage
    from afrocomet.models.build import build_model
    from helpers import WORDS, tiny_tokenizer

    tok = tiny_tokenizer()
    texts = [" ".join(WORDS[i % 7: i % 7 + 3 + i % 5]) for i in range(48)]
    data = encode(tok, texts, 16)
    cfg = StageConfig(name="s1", kind="distill-mlm", epochs=2, max_steps=9, batch_size=4, grad_accum=2, lr=3e-3,
                      matching="projection", adaptive="uncertainty", eval_every=3, checkpoint_every=2,
                      keep_checkpoints=3, progress_every=100, patience=0)
    teacher = build_model("tiny-teacher", "mlm", vocab_size=len(tok), seed=1).eval()

    def mlm_score(model) -> float:  # any deterministic function of the weights will do
        with torch.no_grad():
            return -float(sum(p.float().abs().mean() for p in model.parameters()))

    def train(folder: Path, resume_from=None):
        student = build_model("tiny-student", "mlm", vocab_size=len(tok), seed=0)
        result = train_stage(cfg, student, data, tokenizer=tok, teacher=teacher, evaluate=mlm_score, seed=3,
                             out_dir=folder, checkpoint_dir=folder / "ckpt", resume_from=resume_from, progress=False)
        return student, result

    full, full_result = train(tmp_path / "full")
    saved = list_checkpoints(tmp_path / "full" / "ckpt")
    assert [p.name for p in saved] == ["step-00000004", "step-00000006", "step-00000008"]  # keep 3 of 4
    resumed, resumed_result = train(tmp_path / "full", resume_from=saved[0])  # from step 4 of 9 (epoch 1 starts at 7)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    assert {**full_result.to_dict(), "seconds": 0} == {**resumed_result.to_dict(), "seconds": 0}
    lines = (tmp_path / "full" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if "dev_score" not in line] == list(range(1, 10))


# -- refusals and the keep rule ------------------------------------------------------------------


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_resume_refuses_nothing_to_resume_and_conflicting_config(tiny_config, reference, tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in _one_line_error(capsys)
    assert main(["run", "--resume", str(reference)]) == 2
    assert "is a finished run" in _one_line_error(capsys)

    partial = tmp_path / "run.partial"  # an interrupted run's folder, as a killed run leaves it
    partial.mkdir()
    saved = yaml.safe_load(tiny_config.read_text())
    (partial / "config.yaml").write_text(yaml.safe_dump({**saved, "out": str(tmp_path / "run")}))
    assert main(["run", "--resume", str(tmp_path / "run"), "--seed", "5", "--quiet"]) == 2
    line = _one_line_error(capsys)
    assert "differs from the saved one in seed (saved 0, given 5)" in line
    assert main(["distill", "--config", str(tiny_config), "--resume", str(partial), "--kd-weight", "0.5"]) == 2
    assert "stages[2].kd_weight" in _one_line_error(capsys)
    assert main(["run", "--config", str(tiny_config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "--resume" in _one_line_error(capsys) and (partial / "config.yaml").is_file()


def test_interrupted_run_keeps_its_folder_only_with_something_to_resume(tiny_config, tmp_path, monkeypatch):
    import afrocomet.run.teacher as teacher

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(teacher, "convert_head", interrupt)  # Ctrl-C right after the first stage
    assert main(["run", "--config", str(tiny_config), "--quiet", "--out", str(tmp_path / "run")]) == 130
    stages = tmp_path / "run.partial" / "resume" / "stages"
    assert [p.name for p in stages.iterdir()] == ["teacher-pretrain"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field,value", [("checkpoint_every", -1), ("keep_checkpoints", 0), ("progress_every", 0)])
def test_stage_checkpoint_fields_are_validated(field, value):
    with pytest.raises(AfroCometError, match=field):
        validate_stage(StageConfig(**{field: value}))
