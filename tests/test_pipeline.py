"""End to end: `afrocomet run --quick` through the CLI, and every output it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from afrocomet.cli import main

SYSTEMS = ("teacher", "tfidf_baseline", "teacher_combined", "student", "student_paper", "student_kd_only",
           "student_no_distill", "majority")
LANGS = ("hau", "ibo", "kin", "swa", "yor")


@pytest.fixture(scope="module")
def quick_run(afrisenti_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("quick") / "run"
    code = main(["run", "--quick", "--quiet", "--data-dir", str(afrisenti_dir), "--out", str(out)])
    assert code == 0
    return out


def test_results_json_has_every_promised_key(quick_run):
    results = json.loads((quick_run / "results.json").read_text())
    for lang in LANGS:
        for system in SYSTEMS:
            for metric in ("accuracy", "weighted_f1", "macro_f1"):
                assert 0.0 <= results["languages"][lang][system][metric] <= 1.0
    for system in SYSTEMS:
        assert set(results["average"][system]) >= {"accuracy", "weighted_f1", "macro_f1"}
    assert set(results["retention"]) >= {"accuracy", "weighted_f1"}
    for side in ("teacher", "student"):
        eff = results["efficiency"][side]
        assert eff["parameters"] > 0 and eff["disk_bytes"] > 0 and eff["latency"]["p50_ms"] > 0
    assert results["efficiency"]["ratios"]["parameters"] > 1  # the student is smaller
    for name in ("teacher-pretrain", "teacher-finetune", "stage1", "stage2", "stage1[kd_only]", "stage2[no_distill]"):
        stage = results["stages"][name]
        assert stage["steps"] > 0 and stage["seconds"] > 0
        assert all(set(v) == {"first", "last"} for v in stage["terms"].values())
    assert set(results["stages"]["stage1"]["terms"]) == {"hard", "kd", "attention", "total"}
    assert set(results["stages"]["stage2[kd_only]"]["terms"]) == {"hard", "kd", "total"}
    assert set(results["stages"]["stage2[no_distill]"]["terms"]) == {"hard", "total"}
    assert results["config"]["quick"] is True
    # --quick trains on a seeded sample of each language (budgets.QUICK_TRAIN_ROWS / QUICK_DEV_ROWS), tests whole
    assert {lang: (r["train"][0], r["dev"][0]) for lang, r in results["rows"].items()} == {l: (1500, 300) for l in LANGS}
    # the built-in default: no trimming or frozen parts; the estimate, the teacher check and coverage always
    assert "vocab_trim" not in results and "teacher_frozen" not in results
    estimate = results["time_estimate"]
    assert estimate["seconds"] > 0 and estimate["wall_seconds"] == results["wall_seconds"]
    assert 0 < estimate["training_seconds"] < estimate["wall_seconds"]
    assert set(estimate["stages"]) == {"teacher-finetune", "stage1", "stage2", "alpha-search"}
    assert isinstance(results["teacher_below_majority"], bool)
    assert results["teacher_below_majority"] == results["teacher_dev"]["below_majority"]
    assert set(results["tokenizer_coverage"]["per_language"]) == set(LANGS)
    saved = yaml.safe_load((quick_run / "config.yaml").read_text())
    assert saved == results["config"]
    from importlib import metadata

    from afrocomet.environment import KEY_PACKAGES

    env = results["environment"]  # identical metrics need identical versions: every one recorded
    assert env["python"] == sys.version.split()[0] and env["platform"]
    assert {name: env["packages"][name] for name in KEY_PACKAGES} == {name: metadata.version(name) for name in KEY_PACKAGES}


def test_report_plots_and_logs(quick_run):
    report = (quick_run / "report.md").read_text()
    assert "weighted F1" in report
    assert f"- **environment**: Python {sys.version.split()[0]} on " in report.split("## Results")[0]
    for png in ("weighted_f1_by_language.png", "confusion_teacher.png", "confusion_student.png", "loss_stage1.png"):
        path = quick_run / "plots" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{png}" in report
    lines = (quick_run / "logs" / "stage2" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines if '"dev_score"' not in line]
    assert {"hard", "kd", "attention", "total", "lr", "temperature"} <= set(steps[0])


def test_fair_comparisons(quick_run):
    """Issue 13 items 4-7 on the quick run: several dev evaluations a stage and the step kept; the
    converged labels-only student (stage 1 shared, lr chosen on dev, a longer stage 2); C chosen on dev."""
    from afrocomet.evaluate import TFIDF_C_GRID

    results = json.loads((quick_run / "results.json").read_text())
    stages = results["stages"]
    for name in ("teacher-finetune", "stage1", "stage2", "stage2[no_distill]"):
        log = (quick_run / stages[name]["log"]).read_text().splitlines()
        dev = [json.loads(line)["step"] for line in log if '"dev_score"' in line]
        assert len(dev) >= 2 and stages[name]["best_step"] in dev, name
    assert "stage1[paper]" not in stages  # shares the hybrid student's stage1
    for tag in ("", "[paper]", "[kd_only]", "[no_distill]"):  # one rule: every row's lr chosen on dev, 3x budget
        search = stages[f"lr-search{tag}"]
        assert search["chosen"] in [float(lr) for lr in search["dev_weighted_f1"]] and len(search["dev_weighted_f1"]) == 3
        assert search["max_steps"] == 3 * 12 and search["min_steps"] == 12
        assert stages[f"stage2{tag}"]["steps"] >= 12
    combined = results["ngram_teacher"]  # the combined teacher's w per language, chosen on its dev set, recorded
    assert set(combined["weights"]) == set(combined["dev_weighted_f1"]) == set(LANGS)
    for lang, scores in combined["dev_weighted_f1"].items():
        assert combined["weights"][lang] == max(float(w) for w in scores if scores[w] == max(scores.values()))
        assert len(scores) == 11
    assert combined["folds"] == 5 and set(combined["selection"]) == set(LANGS)
    combines = any(w < 1 for w in combined["weights"].values())
    assert results["retention_teacher"] == ("teacher_combined" if combines else "teacher")
    for lang in LANGS:
        selection = results["languages"][lang]["tfidf_baseline"]["selection"]
        assert selection["C"] in TFIDF_C_GRID and len(selection["dev_weighted_f1"]) == len(TFIDF_C_GRID)
    report = (quick_run / "report.md").read_text()
    assert "## How the systems differ" in report and "student (labels only)" in report
    assert "## The teachers" in report and "## How each student trained" in report
    assert "C chosen on dev per language" in report and "| best dev @ step |" in report


def test_predictions_score_like_results(quick_run, afrisenti_dir):
    from sklearn.metrics import f1_score

    from afrocomet.data.afrisenti import read_tsv

    results = json.loads((quick_run / "results.json").read_text())
    for lang in LANGS:
        rows = (quick_run / "predictions" / f"{lang}.tsv").read_text().splitlines()
        assert rows[0] == "ID\tlabel"
        pred = [r.split("\t") for r in rows[1:]]
        gold = [ex.label for ex in read_tsv(afrisenti_dir / lang / "test.tsv")]
        assert [int(i) for i, _ in pred] == list(range(len(gold)))  # AfriSenti has no IDs: row numbers
        f1 = f1_score(gold, [lab for _, lab in pred], average="weighted")
        assert f1 == pytest.approx(results["languages"][lang]["student"]["weighted_f1"], abs=1e-9)


def test_student_reloads_with_transformers_alone(quick_run, afrisenti_dir):
    """A fresh process with no afrocomet import gives the same predictions as the run."""
    script = f"""
import sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained({str(quick_run / 'student')!r}).eval()
tok = AutoTokenizer.from_pretrained({str(quick_run / 'student')!r})
assert 'afrocomet' not in sys.modules
lines = open({str(afrisenti_dir / 'swa' / 'test.tsv')!r}, encoding='utf-8').read().splitlines()[1:]
texts = [l.split('\\t')[0] for l in lines]
out = []
with torch.inference_mode():
    for i in range(0, len(texts), 64):
        enc = tok(texts[i:i + 64], truncation=True, max_length=64, padding=True, return_tensors='pt')
        out += [model.config.id2label[int(j)] for j in model(**enc).logits.argmax(-1)]
print('\\n'.join(out))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    theirs = proc.stdout.split()
    ours = [r.split("\t")[1] for r in (quick_run / "predictions" / "swa.tsv").read_text().splitlines()[1:]]
    assert theirs == ours
    card = (quick_run / "student" / "README.md").read_text()
    assert card.startswith("---") and "2502.18020" in card


def test_refuses_to_overwrite_another_run(quick_run, capsys):
    before = (quick_run / "results.json").read_bytes()
    code = main(["run", "--quick", "--quiet", "--out", str(quick_run)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(quick_run) in err[0] and "--overwrite" in err[0]
    assert (quick_run / "results.json").read_bytes() == before


def test_failed_run_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--quick", "--quiet", "--data-dir", str(tmp_path / "missing"), "--out", str(out)])
    assert code == 2
    assert "missing" in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either


def test_pretrained_teacher_from_local_folder(afrisenti_dir, tmp_path, caplog):
    """The paper's path (`--teacher NAME_OR_PATH`): the teacher's own tokenizer, trimmed, then
    fine-tuning (embeddings and lower layers frozen), stages 1-2."""
    import logging

    caplog.set_level(logging.INFO, logger="afrocomet")
    from afrocomet.models.build import build_model
    from afrocomet.run import default_config, run
    from afrocomet.tokenizer import train_tokenizer
    from afrocomet.data.afrisenti import read_tsv

    texts = [ex.text for ex in read_tsv(afrisenti_dir / "swa" / "train.tsv")]
    hausa = [ex.text for ex in read_tsv(afrisenti_dir / "hau" / "train.tsv")][:1500]
    tok = train_tokenizer(texts + hausa, vocab_size=600)  # a run on swa alone trims Hausa's pieces away
    teacher_dir = tmp_path / "my-xlmr"
    build_model("tiny-teacher", "mlm", vocab_size=len(tok), seed=0).save_pretrained(teacher_dir)
    tok.save_pretrained(teacher_dir)

    config = default_config(quick=True, teacher=str(teacher_dir))
    assert config.model.student == "comet" and [s.kind for s in config.stages][0] == "teacher-finetune"
    assert config.model.trim_vocab
    config.model.student = "tiny-student"  # comet's 250k-row embedding is too slow for a unit test
    config.model.freeze_teacher_layers = 2  # all of them (--quick's 6 is the lower half of a 12-layer teacher)
    config.data.languages, config.data.data_dir, config.ablations = ["swa"], str(afrisenti_dir), False
    config.data.max_length = 64
    config.compare_init = True  # and a student initialised from this teacher (same vocabulary)
    config.out = str(tmp_path / "out")
    results = run(config, progress=False)
    trained = {name for name in results["stages"] if not name.startswith("lr-search")}  # every row's lr on dev
    assert trained == {"teacher-finetune", "stage1", "stage2", "stage2[paper]", "student-init[teacher_init]",
                       "stage1[teacher_init]", "stage2[teacher_init]"}  # the paper's student shares stage1
    for tag in ("", "[paper]", "[teacher_init]"):
        assert results["stages"][f"lr-search{tag}"]["kind"] == "lr-search"
    assert results["systems"][:6] == ["teacher", "tfidf_baseline", "teacher_combined", "student", "student_paper",
                                      "student_teacher_init"]
    assert 0 < results["stages"]["student-init[teacher_init]"]["explained_variance"] < 1
    report = (tmp_path / "out" / "report.md").read_text()
    assert "init from teacher" in report
    # layer copy needs the teacher's width (tiny-student is 32 wide, the teacher 64): skipped, and said so
    assert results["compare_init"] == {"student_init": "random", "compared": ["teacher"],
                                       "skipped": {"layers": "student hidden size 32 != teacher's 64"}}
    assert "Not compared: `layers` (student hidden size 32 != teacher's 64)." in report
    assert "compare_init: student_init=layers skipped (student hidden size 32 != teacher's 64)" in caplog.text
    assert results["efficiency"]["teacher"]["parameters"] > results["efficiency"]["student"]["parameters"]
    from transformers import AutoTokenizer

    trim = results["vocab_trim"]
    assert trim["rows_total"] == len(tok) and trim["rows_kept"] < len(tok)
    assert trim["teacher"]["parameters_after"] == results["efficiency"]["teacher"]["parameters"]
    assert trim["student"]["parameters_after"] == results["efficiency"]["student"]["parameters"]
    assert trim["rows_kept_fraction"] == trim["rows_kept"] / trim["rows_total"] < 1
    assert trim["token_coverage"] == 1.0 and "kept_fraction" not in trim  # every train piece is kept
    messages = [r.getMessage() for r in caplog.records]
    order = [next(i for i, m in enumerate(messages) if m.startswith(prefix))
             for prefix in ("vocabulary trimmed", "estimated training time", "stage teacher-finetune (")]
    assert order == sorted(order)  # trimmed, estimated, then fine-tuned
    frozen = results["teacher_frozen"]
    assert frozen["embeddings"] and frozen["layers"] == 2 and 0 < frozen["trainable_parameters"] < frozen["parameters"]
    estimate = results["time_estimate"]
    assert set(estimate["stages"]) == {"teacher-finetune", "stage1", "stage2"}
    assert 0 < estimate["training_seconds"] < estimate["wall_seconds"] == results["wall_seconds"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Teacher preparation" in report and "embeddings and layers 1-2 of 2" in report
    for side in ("teacher", "student"):
        saved = AutoTokenizer.from_pretrained(tmp_path / "out" / side)
        config_json = json.loads((tmp_path / "out" / side / "config.json").read_text())
        assert len(saved) == config_json["vocab_size"] == trim["rows_kept"]
        pieces = saved.convert_ids_to_tokens(saved("habari yako")["input_ids"])
        assert pieces == tok.convert_ids_to_tokens(tok("habari yako")["input_ids"])
