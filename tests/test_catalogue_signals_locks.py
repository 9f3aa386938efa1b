"""Catalogue rows (README "Bad input"): SIGTERM from the first moment, a second run on an `--out` that a
live run is writing, and messages that named the wrong problem; each through the real `afrocomet`
command in a subprocess (its real stderr)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import WORDS, wait_until

GOOD = "tweet\tlabel\n" + "".join(f"{w} {v}\t{lab}\n" for w, v, lab in zip(
    WORDS, reversed(WORDS), ["positive", "negative", "neutral"] * 6))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
COMMAND = [sys.executable, "-m", "afrocomet"]


def quick(work: Path, *more: str, train: str = "train.tsv", out: str = "out") -> list[str]:
    return [*COMMAND, "run", "--quick", "--quiet", "--no-ablations", "--train", str(work / train), "--test",
            str(work / "test.tsv"), "--out", str(work / out), *more]


@pytest.fixture
def work(tmp_path):
    (tmp_path / "train.tsv").write_text(GOOD, encoding="utf-8")
    (tmp_path / "test.tsv").write_text(GOOD, encoding="utf-8")
    return tmp_path


def one_error(args: list[str], cwd: Path, *needles: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("afrocomet: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has installed a SIGTERM handler (Linux: SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


# ----------------------------------------------------------------------------- SIGTERM


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_sigterm_during_start_up_says_terminated(work):
    """The signal arrives the moment the command can take it (while it still imports torch and the
    rest): one line, `afrocomet: terminated`, exit 143, nothing written."""
    proc = subprocess.Popen(quick(work), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=work)
    try:
        wait_until(proc, lambda: _catches_sigterm(proc.pid), 60, poll=0.005)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143 and err.decode().strip().splitlines() == ["afrocomet: terminated"], err
    assert sorted(p.name for p in work.iterdir()) == ["test.tsv", "train.tsv"]


# ----------------------------------------------------------------------------- the output folder's lock


def test_second_run_on_a_live_out_is_refused_then_sigterm_stops_the_first(work):
    """Run A builds `out.partial/` and holds its lock; run B on the same `--out` (even with --overwrite)
    is told that A is writing it and exits 2 without touching it; SIGTERM then stops A in one line."""
    first = subprocess.Popen(quick(work), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=work)
    lock = work / "out.partial" / "run.lock"
    try:
        wait_until(first, lock.is_file, 240, poll=0.02)
        first.send_signal(signal.SIGSTOP)  # alive, and it stays where it is while B tries
        assert json.loads(lock.read_text())["pid"] == first.pid
        before = sorted(p.name for p in (work / "out.partial").rglob("*"))
        for more in ([], ["--overwrite"], ["--resume", str(work / "out")]):
            args = quick(work, *more) if more[:1] != ["--resume"] else [*COMMAND, "run", "--quiet", *more]
            one_error(args, work, f"another run (pid {first.pid}) is writing {work / 'out'}")
        assert sorted(p.name for p in (work / "out.partial").rglob("*")) == before
        first.send_signal(signal.SIGTERM)
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 143 and err.decode().strip().splitlines()[-1] == "afrocomet: terminated", err
    assert not lock.exists()


def test_stale_lock_of_a_dead_run_is_taken_over(work):
    """A lock left by a process that is gone (SIGKILL) does not block: the new run goes on (here to the
    data error it was set up to hit, which comes after the folder is taken)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    partial = work / "out.partial"
    partial.mkdir()
    (partial / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    one_error(quick(work, "--overwrite", train="missing.tsv"), work, "missing.tsv: file not found")
    assert not partial.exists()  # taken over with --overwrite, then removed as the run failed before any stage


# ----------------------------------------------------------------------------- messages naming the real problem


def test_symlink_loop_is_not_called_missing(work):
    (work / "loop.tsv").symlink_to("loop.tsv")
    line = one_error(quick(work, train="loop.tsv"), work, "loop.tsv: is a symbolic link that loops")
    assert "not found" not in line


def test_broken_symlink_names_its_target(work):
    (work / "gone.tsv").symlink_to("nowhere.tsv")
    one_error(quick(work, train="gone.tsv"), work, "gone.tsv: is a broken symbolic link", "nowhere.tsv")


def test_huge_line_says_how_long_not_carriage_return(work):
    (work / "big.tsv").write_text(GOOD + "x" * 5_000_000 + "\tpositive\n", encoding="utf-8")
    line = one_error(quick(work, train="big.tsv"), work, f"big.tsv:{GOOD.count(chr(10)) + 1}:",
                     "5000000 characters", "limit of 131072")
    assert "carriage return" not in line


def test_carriage_return_inside_the_text_is_still_named(work):
    (work / "cr.tsv").write_text(GOOD + "one\rtwo\tpositive\n", encoding="utf-8")
    one_error(quick(work, train="cr.tsv"), work, "cr.tsv:", "carriage return inside the text")


def test_vocab_size_too_small_names_the_config_file(work):
    config = subprocess.run([*COMMAND, "config"], capture_output=True, text=True, env=ENV, cwd=work, check=True).stdout
    assert "vocab_size: 8000" in config
    (work / "run.yaml").write_text(config.replace("vocab_size: 8000", "vocab_size: 3"), encoding="utf-8")
    one_error([*COMMAND, "run", "--config", "run.yaml", "--train", "train.tsv", "--test", "test.tsv", "--out", "o"],
              work, "run.yaml: model.vocab_size must be at least 6, got 3")
