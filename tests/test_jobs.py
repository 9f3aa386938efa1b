"""Student rows trained side by side (`jobs`, run/jobs.py): each row in its own process on its share of
the threads gives exactly what one job gives at that thread count, and says which row each line is."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from afrocomet.cli import main
from helpers import tiny_swa_run_config

pytestmark = pytest.mark.usefixtures("one_thread")

STAGE = dict(batch_size=16, lr=0.002, progress_every=3, max_steps=6, eval_every=3, patience=0)
TIMES = ("seconds", "elapsed", "time", "wall", "steps_per_second")


@pytest.fixture(scope="module")
def rows_config(afrisenti_dir, tmp_path_factory) -> Path:
    """Tiny saved teacher and student, swa only; four student rows (hybrid, paper, KD only, labels only);
    few enough training rows that stage 2 reads an epoch (so it reads a teacher-output cache)."""
    rows = {"train": 90, "dev": 90, "test": 60}
    return tiny_swa_run_config(tmp_path_factory.mktemp("jobs"), afrisenti_dir, rows, STAGE, {"lr_factors": [1, 3]})


def _records(out: Path) -> dict[str, list[dict]]:
    """Every student stage's log, without its clock readings."""
    logs = {}
    for path in sorted((out / "logs").glob("*/log.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        logs[path.parent.name] = [{k: v for k, v in r.items() if not any(t in k for t in TIMES)} for r in rows]
    return logs


@pytest.fixture
def light_outputs(monkeypatch):
    """What does not touch the models, left out for speed (as in test_determinism.py): the TF-IDF
    baseline row (a majority stand-in), the plots, and most of the latency texts."""
    import functools

    import afrocomet.evaluate
    import afrocomet.report
    import afrocomet.run.efficiency
    import afrocomet.run.steps

    monkeypatch.setattr(afrocomet.evaluate, "tfidf_select",
                        lambda train, labels, dev, dev_labels, test, seed: ([labels[0]] * len(test), 1.0, {1.0: 0.0}))
    monkeypatch.setattr(afrocomet.report, "write_plots", lambda results, out_dir: [])
    monkeypatch.setattr(afrocomet.run.steps, "measure_efficiency",
                        functools.partial(afrocomet.run.efficiency.measure_efficiency, n_texts=8))


def test_rows_side_by_side_match_one_job(rows_config, tmp_path, light_outputs, capfd, caplog, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["run", "--config", str(rows_config), "--quiet", "--out", str(one), "--threads", "1",
                 "--jobs", "1"]) == 0
    capfd.readouterr()
    monkeypatch.setenv("AFROCOMET_CACHE", str(tmp_path / "cache"))  # no teacher-output cache yet
    caplog.set_level(logging.INFO, logger="afrocomet")  # every process's info lines (to stderr), as from the command
    # two rows at a time on one thread each (as asked, though the run has one thread: the same threads per row)
    assert main(["run", "--config", str(rows_config), "--out", str(two), "--threads", "1", "--jobs", "2"]) == 0
    stderr = capfd.readouterr().err  # the workers write to the same stderr
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    students = [s for s in r1["systems"] if s.startswith("student")]
    assert len(students) == 4, r1["systems"]  # the paper's row reads the hybrid's stage 1: trained first, once
    assert "student_jobs" not in r1
    assert r2["student_jobs"] == {"jobs": 2, "threads_each": 1, "rows": 4}
    ours, theirs = _records(two), _records(one)
    assert sorted(ours) == sorted(theirs) and any(name.startswith("lr-search") for name in ours)
    for name in theirs:  # each row at one thread, in a worker or not: the same steps, losses and dev scores
        assert ours[name] == theirs[name], name
    for system in students:
        assert r2["average"][system] == r1["average"][system], system
    # each worker's progress lines name their row; what rows share was trained here, once
    assert "student_kd_only: stage2: " in stderr and "student_no_distill: stage2: " in stderr
    assert "student_paper: stage2: " in stderr and "student_paper: stage1: " not in stderr  # loaded
    assert len(re.findall(r"(?m)^\d\d:\d\d:\d\d stage1: ", stderr)) == 1  # the hybrid's, in this process
    # the teacher-output cache the rows read: built once, here (not by each worker at once), then read
    assert len(re.findall(r"(?m)^\d\d:\d\d:\d\d teacher cache: built ", stderr)) == 1, stderr[-3000:]
    assert stderr.count("teacher cache: built") == 1 and "student_kd_only: teacher cache: reusing" in stderr
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr[-3000:]


def test_a_failing_row_stops_the_others_and_is_raised_here():
    """A worker's exception comes back to the run (which then keeps its folder to resume), a worker that
    dies is one error line's AfroCometError, and no worker is left training either way."""
    import multiprocessing
    import os

    from afrocomet.errors import AfroCometError
    from afrocomet.run.jobs import Row, _train_row, workers
    from afrocomet.run.students import VARIANTS

    broken = [Row(None, "", VARIANTS[0], 0), Row(None, "[kd_only]", VARIANTS[1], 0)]  # no context to train in
    with pytest.raises(AttributeError), workers(jobs=2, threads=1) as pool:
        for future in [pool.submit(_train_row, row, None, None) for row in broken]:
            future.result()
    with pytest.raises(AfroCometError, match="died .* --resume continues"), workers(jobs=2, threads=1) as pool:
        pool.submit(os._exit, 9).result()  # as the kernel's OOM killer would end it
    assert not multiprocessing.active_children()


def test_the_workers_are_stopped_without_a_word_when_the_run_started_as_the_command(tmp_path):
    """A spawned worker re-imports the main module; started as `afrocomet`, that installs the command's
    signal handlers, and each worker said "afrocomet: terminated" when the run stopped it. A worker that
    had shown a progress bar (tqdm's multiprocessing lock, a named semaphore) left the resource tracker to
    warn of a leaked semaphore at exit (the default run ended so)."""
    import subprocess
    import sys

    script = tmp_path / "afrocomet"  # named as the command (afrocomet.cli installs its handlers for it)
    script.write_text("import afrocomet.cli\n"
                      "def bar(n):\n"
                      "    from tqdm import tqdm\n"
                      "    return sum(tqdm(range(n), disable=True))\n"
                      "if __name__ == '__main__':\n"
                      "    from afrocomet.run.jobs import workers\n"
                      "    with workers(jobs=2, threads=1) as pool:  # a normal end after progress bars\n"
                      "        assert [f.result() for f in [pool.submit(bar, 3) for _ in range(4)]] == [3] * 4\n"
                      "    try:  # stopped by a failure (killed) after a progress bar, the other maybe still starting\n"
                      "        with workers(jobs=2, threads=1) as pool:\n"
                      "            assert pool.submit(bar, 3).result() == 3\n"
                      "            raise ValueError\n"
                      "    except ValueError:\n"
                      "        print('done')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout, out.stderr) == (0, "done\n", "")


def test_rows_that_train_their_own_stage1_against_the_teacher_go_first():
    from types import SimpleNamespace

    from afrocomet.config import StageConfig
    from afrocomet.run.jobs import Row, longest_first
    from afrocomet.run.students import PAPER, VARIANTS

    ctx = SimpleNamespace(config=SimpleNamespace(stages=[StageConfig(name="stage1", kind="distill-mlm"),
                                                         StageConfig(name="stage2", kind="distill-task")]))
    hybrid, kd_only, no_distill = (Row(ctx, v.tag, v, 0) for v in VARIANTS)
    paper = Row(ctx, PAPER.tag, PAPER, 0)
    seed1 = Row(ctx, "[seed1]", VARIANTS[0], 1)  # the hybrid's stage 1 of another seed: trained first, here
    order = longest_first([hybrid, paper, kd_only, no_distill, seed1], shared={""})
    assert [(r.variant.system, r.seed) for r in order] == [
        ("student_kd_only", 0), ("student", 0), ("student_paper", 0), ("student_no_distill", 0), ("student", 1)]
