"""Run options beyond the default: alpha chosen on dev, adaptive vs fixed weights, one student per language."""

from __future__ import annotations

import json
import math

import pytest

from afrocomet.cli import main

LANGS = ["--languages", "swa,kin"]  # the two smallest languages: a quick run in seconds


def _run(tmp_path, afrisenti_dir, *flags: str):
    """A quick run of what these tests are about: no ablations, no lr search, no combined teacher (so no
    paper row); tests/test_pipeline.py runs those."""
    out = tmp_path / "run"
    quick = [] if "--config" in flags else ["--quick"]  # a config sets every size itself (--quick is refused)
    code = main(["run", *quick, "--quiet", "--no-ablations", "--lr-factors", "1", "--no-ngram-teacher",
                 "--data-dir", str(afrisenti_dir), *LANGS, "--out", str(out), *flags])
    assert code == 0
    return out, json.loads((out / "results.json").read_text())


def test_alpha_chosen_on_dev_and_adaptive_compared(tmp_path, afrisenti_dir, one_thread):
    out, results = _run(tmp_path, afrisenti_dir, "--alpha-candidates", "0,1", "--compare-adaptive", "magnitude")
    search = results["sampling"]["search"]
    scores = search["dev_weighted_f1"]
    assert set(scores) == {"0", "1"} and search["steps"] == 12  # capped at the quick stage's own budget
    assert results["sampling"]["alpha"] == max((0.0, 1.0), key=lambda a: (scores[f"{a:g}"], -abs(a - 0.5)))
    for alpha in ("0", "1"):  # each candidate trained from the same student, logged like any stage
        stage = results["stages"][f"alpha-search[{alpha}]"]
        assert stage["best_score"] == pytest.approx(scores[alpha])
    # the adaptive variant is a full student: both its stages ran with the balancer, and it is evaluated
    assert "student_adaptive" in results["systems"]
    assert results["stages"]["stage2[adaptive]"]["steps"] > 0
    assert results["config"]["compare_adaptive"] == "magnitude"
    report = (out / "report.md").read_text()
    assert "## Fixed vs adaptive loss weights" in report and "weights won" in report
    assert "## Language sampling" in report and "chosen on dev" in report


def test_one_student_per_language(tmp_path, afrisenti_dir, one_thread):
    out, results = _run(tmp_path, afrisenti_dir, "--per-language", "--train-rows", "400")
    assert results["sampling"]["per_language"] is True
    for lang in ("swa", "kin"):  # each language's stages, its own student folder, its own predictions
        assert results["stages"][f"stage2[{lang}]"]["steps"] > 0
        assert (out / "student" / lang / "model.safetensors").is_file()
        assert (out / "predictions" / f"{lang}.tsv").is_file()
    assert "stage2" not in results["stages"]  # no multilingual student was trained
    for lang, n_train in (("swa", 400), ("kin", 400)):  # each trained on its own language's (sampled) tweets only
        budget = round(12 / math.ceil(n_train / 32), 3)  # every student row: its budget, up to 3x (early stopping)
        assert budget <= results["stages"][f"stage2[{lang}]"]["epochs"] <= round(3 * budget, 3) + 1e-9


def test_bad_alpha_candidates_flag(tmp_path, capsys):
    code = main(["run", "--quick", "--alpha-candidates", "0.3,x", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "--alpha-candidates" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_alpha_probes_read_the_cache_the_stage_builds(tmp_path, afrisenti_dir, one_thread, monkeypatch):
    """The default search (0.3, 0.5, 1.0): when stage 2 reads a whole epoch, the first probe builds the
    teacher-output cache (a probe alone reads less than an epoch and would run the teacher live)."""
    import yaml

    from afrocomet.config import from_dict, to_dict
    from afrocomet.run import default_config

    monkeypatch.setenv("AFROCOMET_CACHE", str(tmp_path / "cache"))
    config = to_dict(default_config(quick=True))
    stage2 = next(s for s in config["stages"] if s["name"] == "stage2")
    stage2.update(max_steps=None, epochs=1.0)  # swa + kin: 160 steps, one epoch
    config["data"].update(probe_steps=20)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    from_dict(yaml.safe_load(path.read_text()))  # the file is a valid config
    out, results = _run(tmp_path, afrisenti_dir, "--config", str(path))
    assert results["config"]["data"]["alpha_candidates"] == [0.3, 0.5, 1.0]
    caches = {results["stages"][f"alpha-search[{a}]"]["teacher_cache"] for a in ("0.3", "0.5", "1")}
    assert caches == {results["stages"]["stage2"]["teacher_cache"]} and None not in caches
    assert all(results["stages"][f"alpha-search[{a}]"]["steps"] == 20 for a in ("0.3", "0.5", "1"))
    assert results["sampling"]["search"]["chosen"] == results["sampling"]["alpha"]


def test_train_and_dev_rows_sample_each_language_and_a_fixed_alpha_turns_the_search_off(tmp_path, afrisenti_dir,
                                                                                         one_thread):
    """--train-rows / --dev-rows: every system (students, teacher and TF-IDF) sees the same sampled rows;
    the test sets stay whole, and the report says what was cut. --sampling-alpha (the same run, the
    two are independent): no alpha search."""
    out, results = _run(tmp_path, afrisenti_dir, "--train-rows", "400", "--dev-rows", "300", "--sampling-alpha", "0.7")
    assert results["sampling"] == {"alpha": 0.7, "search": None, "per_language": False}
    assert not any(name.startswith("alpha-search") for name in results["stages"])
    assert results["config"]["data"]["alpha_candidates"] == []
    assert results["rows"] == {"swa": {"train": [400, 1810], "dev": [300, 453]},
                               "kin": {"train": [400, 3302], "dev": [300, 827]}}
    budget = round(12 / math.ceil(800 / 32), 3)  # 800 rows, not 5,112; up to 3x under the one training rule
    assert budget <= results["stages"]["stage2"]["epochs"] <= round(3 * budget, 3) + 1e-9
    assert results["languages"]["swa"]["teacher"]["n"] == 748 and results["languages"]["kin"]["teacher"]["n"] == 1026
    assert results["config"]["data"]["train_rows"] == 400
    report = (out / "report.md").read_text()
    assert "**sampled rows**: swa train 400 of 1,810, dev 300 of 453; kin train 400 of 3,302, dev 300 of 827" in report
