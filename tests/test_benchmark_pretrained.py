"""benchmarks/pretrained_teacher.py: its table, goal lines and README section from a run's results.json
(the script itself runs `afrocomet run`, which the pipeline tests cover)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pretrained_teacher.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("pretrained_teacher", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results() -> dict:
    systems = {"teacher": 0.60, "tfidf_baseline": 0.64, "teacher_combined": 0.67, "student": 0.55,
               "student_paper": 0.52, "student_kd_only": 0.50, "student_no_distill": 0.35, "majority": 0.2}
    langs = {"hau": 0.0, "swa": 0.02, "kin": -0.02}
    languages = {lang: {s: {"weighted_f1": v + d} for s, v in systems.items()} for lang, d in langs.items()}
    languages["kin"]["teacher"]["weighted_f1"] = 0.70  # the teacher beats TF-IDF on kin only
    average = {s: {"weighted_f1": sum(languages[lang][s]["weighted_f1"] for lang in langs) / 3} for s in systems}
    column = {"parameters": 100, "non_embedding_parameters": 50, "latency": {"p50_ms": 10.0}}
    return {"languages": languages, "average": average, "retention": {"weighted_f1": 0.91},
            "efficiency": {"teacher": column, "student": {**column, "non_embedding_parameters": 10},
                           "ratios": {"parameters": 1.0, "non_embedding_parameters": 5.0, "latency": 3.0}}}


def test_rows_with_seen_and_unseen_averages(bench):
    rows, columns = bench.score_rows(_results())
    assert [r["language"] for r in rows] == ["hau", "swa", "kin", "avg", "seen (hau, swa)", "unseen (ibo, kin, yor)"]
    assert columns[:5] == ["language", "teacher (e5)", "char TF-IDF", "combined teacher", "hybrid"]
    assert "hybrid, PCA init" not in columns
    seen = rows[4]
    assert seen["char TF-IDF"] == pytest.approx(100 * (0.64 + 0.66) / 2)
    assert rows[5]["teacher (e5)"] == pytest.approx(70.0)  # kin alone


def test_goal_lines_say_met_or_not(bench):
    lines = bench.goal_lines(_results())
    assert lines[0].startswith("- combined teacher >= char TF-IDF + 2 (avg): 67.00 vs 64.00 (met")
    assert "below it on" not in lines[0]
    assert lines[1].startswith("- student >= char TF-IDF (avg): 55.00 vs 64.00 (**not met**; below it on hau -9.0")
    assert "5.00x (met)" in lines[3] and "3.00x (**not met**)" in lines[4]
    assert "55.00 / 50.00 / 35.00 (met)" in lines[5]
    assert lines[6].endswith("55.00 vs 52.00 (+3.00)")


def test_goal_lines_without_the_ablations(bench):
    """--no-ablations: no KD-only line (no nan, no comparison against a missing row)."""
    results = _results()
    for block in (results["average"], *results["languages"].values()):
        del block["student_kd_only"], block["student_no_distill"]
    lines = bench.goal_lines(results)
    assert not any("KD-only" in line or "nan" in line for line in lines)
    assert lines[-1].endswith("55.00 vs 52.00 (+3.00)")


def test_run_command_passes_the_student_choices(bench):
    import argparse

    base = dict(teacher=Path("/e5"), data_dir=Path("/d"), languages="hau", train_rows=None, dev_rows=None,
                all_rows=True, freeze_teacher_layers=None, student="comet-384-l2", epochs=None, device="cpu",
                out=Path("/o"), quick=False, student_epochs=None, probe_steps=None)
    cmd = bench.run_command(argparse.Namespace(**base, student_init=None, no_ablations=False, no_compare_init=False),
                            cuda=False)
    assert "--compare-init" in cmd and "--no-ablations" not in cmd and "--student-init" not in cmd
    cmd = bench.run_command(argparse.Namespace(**base, student_init="layers", no_ablations=True, no_compare_init=True),
                            cuda=False)
    assert "--compare-init" not in cmd and "--no-ablations" in cmd
    assert cmd[cmd.index("--student-init") + 1] == "layers"


def test_epochs_config_sets_the_teachers_and_the_students_budgets(bench, tmp_path):
    import argparse

    import yaml

    args = argparse.Namespace(teacher="demo-teacher", out=tmp_path / "run", epochs=0.5, student_epochs=0.25,
                              probe_steps=100)
    config = yaml.safe_load(bench.epochs_config(args).read_text())
    epochs = {s["name"]: s["epochs"] for s in config["stages"]}
    assert epochs["teacher-finetune"] == 0.5 and epochs["stage2"] == 0.25 and config["data"]["probe_steps"] == 100
    args.student_epochs = args.probe_steps = None
    config = yaml.safe_load(bench.epochs_config(args).read_text())
    assert {s["name"]: s["epochs"] for s in config["stages"]}["stage2"] == 0.5 and config["data"]["probe_steps"] == 400


def test_section_replaced_in_place(bench):
    text = "# B\n\n## a.py\n\nold a\n\n## pretrained_teacher.py\n\nold\n\n## z.py\n\nz\n"
    new = bench.replace_section(text, "## pretrained_teacher.py\n\nnew\n\n")
    assert new == "# B\n\n## a.py\n\nold a\n\n## pretrained_teacher.py\n\nnew\n\n## z.py\n\nz\n"
    assert bench.replace_section("# B\n", "## pretrained_teacher.py\n\nx\n").endswith("\n\n## pretrained_teacher.py\n\nx\n")
    both = bench.replace_section(text, "## pretrained_teacher.py, all rows\n\nall\n\n")  # beside, not instead
    assert "old\n" in both and both.endswith("## pretrained_teacher.py, all rows\n\nall\n\n")
    assert bench.section_heading({"rows": {"hau": {}}}) == "## pretrained_teacher.py"
    assert bench.section_heading({}) == "## pretrained_teacher.py, all rows"


def test_efficiency_rows_read_the_shared_schema(bench):
    rows = bench.efficiency_rows(_results())
    assert [r["measure"] for r in rows] == ["parameters", "non-embedding parameters", "p50 ms, batch 1"]
    assert rows[1] == {"measure": "non-embedding parameters", "teacher": 50, "student": 10, "teacher / student": 5.0}
    assert rows[2]["teacher"] == 10.0 and rows[2]["teacher / student"] == 3.0


def test_rows_note_is_the_reports_own(bench):
    from afrocomet.report.sections import rows_text

    assert rows_text({"hau": {"train": [1500, 14172], "dev": [300, 2677]}}).startswith(
        "hau train 1,500 of 14,172, dev 300 of 2,677 (a seeded sample")
    assert rows_text(None) == "" and rows_text({}) == ""


@pytest.fixture(scope="module")
def default_bench():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("default_run", SCRIPT.parent / "default_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_run_table_and_goals(default_bench):
    r = _results()
    r["languages"]["ibo"], r["languages"]["yor"] = r["languages"]["hau"], r["languages"]["kin"]
    r.update(retention_teacher="teacher_combined", wall_seconds=840.0)
    r["retention"]["weighted_f1"] = 0.96
    r["efficiency"]["ratios"]["latency"] = 4.5
    rows, columns = default_bench.score_rows(r)
    assert columns == ["system", "avg", "seen (hau, swa)", "unseen (ibo, kin, yor)"]
    assert [row["system"] for row in rows][:3] == ["transformer teacher", "char n-gram", "combined teacher"]
    lines = default_bench.goal_lines(r)
    assert lines[0].startswith("- combined teacher >= char TF-IDF (avg): 67.00 vs 64.00 (met)")
    assert "55.00 vs 35.00 + 1 (met)" in lines[1] and "0.960 (met)" in lines[2] and "4.50x (met)" in lines[3]
    assert lines[4] == "- run <= 15 min: 14.0 min (met)" and lines[5].endswith("(+3.00)")
