"""Determinism on CPU: the same seed and config give the same results.json metrics, stage losses and
student weights (bitwise); another seed changes them (so the comparison can fail)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afrocomet.cli import main

SMALL = """model: {{teacher: tiny-teacher, student: tiny-student, vocab_size: 400, tokenizer_sample: 600}}
data: {{languages: [swa], data_dir: {data}, max_length: 32}}
ablations: false
stages:
  - {{name: teacher-finetune, kind: teacher-finetune, max_steps: 6, batch_size: 16, lr: 0.002, progress_every: 2}}
  - {{name: stage1, kind: distill-mlm, max_steps: 4, batch_size: 16, lr: 0.002, progress_every: 2}}
  - {{name: stage2, kind: distill-task, max_steps: 6, batch_size: 16, lr: 0.002, progress_every: 2, eval_every: 3}}
"""


def _run(config: Path, out: Path, seed: int) -> Path:
    assert main(["run", "--config", str(config), "--quiet", "--seed", str(seed), "--out", str(out)]) == 0
    return out


def _comparable(out: Path) -> dict:
    """Everything a seed decides: metrics, per-stage losses and dev scores, the saved student's bytes."""
    results = json.loads((out / "results.json").read_text())
    stages = {name: {k: v for k, v in stage.items() if k not in ("seconds", "log")}
              for name, stage in results["stages"].items()}
    logs = {p.parent.name: [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "time", "wall")}
                            for line in p.read_text().splitlines()]
            for p in sorted((out / "logs").glob("*/log.jsonl"))}
    return {"languages": results["languages"], "average": results["average"], "retention": results["retention"],
            "stages": stages, "logs": logs, "student": (out / "student" / "model.safetensors").read_bytes(),
            "teacher": (out / "teacher" / "model.safetensors").read_bytes(),
            "predictions": (out / "predictions" / "swa.tsv").read_bytes()}


@pytest.fixture(scope="module")
def three_runs(afrisenti_dir, tmp_path_factory, one_thread):
    """Three small runs in one process (so a run that depends on what ran before in it fails too).

    Left out for speed, as they do not touch the models: the TF-IDF baseline (a majority stand-in),
    the plots, and most of the latency texts (these numbers differ from run to run anyway)."""
    import functools

    import afrocomet.evaluate
    import afrocomet.run.efficiency
    import afrocomet.run.steps
    import afrocomet.report

    patch = pytest.MonkeyPatch()
    patch.setattr(afrocomet.evaluate, "tfidf_select",
                  lambda train, labels, dev, dev_labels, test, seed: ([labels[0]] * len(test), 1.0, {1.0: 0.0}))
    patch.setattr(afrocomet.report, "write_plots", lambda results, out_dir: [])
    patch.setattr(afrocomet.run.steps, "measure_efficiency",
                  functools.partial(afrocomet.run.efficiency.measure_efficiency, n_texts=8))
    root = tmp_path_factory.mktemp("determinism")
    config = root / "small.yaml"
    config.write_text(SMALL.format(data=afrisenti_dir), encoding="utf-8")
    try:
        yield [_comparable(_run(config, root / name, seed)) for name, seed in (("a", 0), ("c", 1), ("b", 0))]
    finally:
        patch.undo()


def test_same_seed_same_results(three_runs):
    a, _, b = three_runs
    for key in a:
        assert a[key] == b[key], key
    assert a["stages"]["stage2"]["terms"]["kd"]["first"] > 0  # the losses compared are real numbers


def test_other_seed_changes_results(three_runs):
    a, c, _ = three_runs
    assert a["student"] != c["student"] and a["teacher"] != c["teacher"]
    assert a["stages"] != c["stages"] and a["logs"] != c["logs"]
