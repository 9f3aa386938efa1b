"""The run report and the model card, from a synthetic results dict and small JSONL logs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from afrocomet.report import model_card, read_log, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SYSTEMS = ["teacher", "student", "student_kd_only", "student_no_distill", "tfidf_baseline", "majority"]
# Weighted F1 per system for hau/ibo (std only for the students: several seeds).
F1 = {"teacher": (0.70, 0.76), "student": (0.66, 0.73), "student_kd_only": (0.65, 0.70),
      "student_no_distill": (0.60, 0.66), "tfidf_baseline": (0.62, 0.71), "majority": (0.25, 0.30)}


def _metrics(f1: float, n: int, std: float | None, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cm = rng.integers(5, 60, size=(3, 3)) + np.diag([200, 120, 180])
    m = {"accuracy": f1 + 0.01, "weighted_f1": f1, "macro_f1": f1 - 0.02,
         "per_class_f1": {"negative": f1 + 0.03, "neutral": f1 - 0.1, "positive": f1 + 0.05},
         "confusion_matrix": cm.tolist(), "n": n}
    if std is not None:
        m["weighted_f1_std"] = std
    return m


def _log_lines(terms: list[str], steps: int, dev_every: int) -> str:
    lines = []
    for step in range(1, steps + 1):
        row = {"step": step, "epoch": 0, "lr": 1e-3, "temperature": 2.0}
        row.update({t: {"kd": 50.0, "attention": 0.05}.get(t, 2.0) * np.exp(-step / 40) + 0.01 for t in terms})
        row["total"] = sum(row[t] for t in terms)
        lines.append(json.dumps(row))
        if step % dev_every == 0:
            lines.append(json.dumps({"step": step, "dev_score": 0.5 + step / 1000}))
    return "\n".join(lines) + '\n{"step": 9'  # an interrupted run's half-written last line


def full_results(out_dir: Path) -> dict:
    languages = {lang: {s: _metrics(F1[s][i], n, 0.011 if s.startswith("student") else None, i * 10 + k)
                        for k, s in enumerate(SYSTEMS)}
                 for i, (lang, n) in enumerate([("hau", 5303), ("ibo", 3682)])}
    stages = {
        "teacher-pretrain": {"name": "teacher-pretrain", "kind": "teacher-pretrain", "steps": 600, "epochs": 3.0,
                             "seconds": 200.1, "terms": {"hard": {"first": 9.1, "last": 4.2}, "total": {"first": 9.1, "last": 4.2}},
                             "best_score": -4.3, "best_step": 600, "stopped_early": False, "log": None},
        "stage2": {"name": "stage2", "kind": "distill-task", "steps": 120, "epochs": 4.0, "seconds": 95.5,
                   "terms": {"kd": {"first": 1.2, "last": 0.31}, "attention": {"first": 0.05, "last": 0.02},
                             "hard": {"first": 1.1, "last": 0.6}, "total": {"first": 2.35, "last": 0.93}},
                   "best_score": 0.695, "best_step": 100, "stopped_early": True, "log": "logs/stage2/log.jsonl"},
        "stage2[kd_only]": {"name": "stage2", "kind": "distill-task", "steps": 120, "epochs": 4.0, "seconds": 80.0,
                            "terms": {"kd": {"first": 1.2, "last": 0.35}}, "log": "logs/stage2[kd_only]/log.jsonl"},
    }
    for name, terms in (("stage2", ["kd", "attention", "hard"]), ("stage2[kd_only]", ["kd", "hard"])):
        path = out_dir / "logs" / name / "log.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text(_log_lines(terms, 120, 30), encoding="utf-8")
    return {
        "afrocomet_version": "0.1.0", "created": "2026-11-25T10:00:00Z", "wall_seconds": 812.3,
        "labels": ["negative", "neutral", "positive"], "systems": SYSTEMS, "languages": languages,
        "average": {s: {"accuracy": np.mean(F1[s]) + 0.01, "weighted_f1": float(np.mean(F1[s])),
                        "macro_f1": np.mean(F1[s]) - 0.02} for s in SYSTEMS},
        "retention": {"accuracy": 0.96, "weighted_f1": 0.9504, "macro_f1": 0.94},
        "efficiency": {"teacher": {"parameters": 5_400_000, "disk_bytes": 21_600_000, "memory_bytes": 123_456_789,
                                   "latency": {"p50_ms": 3.1, "p95_ms": 4.0}, "throughput": {"texts_per_s": 900.0}},
                       "student": {"parameters": 666_000, "disk_bytes": 2_700_000, "memory_bytes": 41_000_000,
                                   "latency": {"p50_ms": 0.6, "p95_ms": 0.9}, "throughput": {"texts_per_s": 3600.0}},
                       "device": "cpu", "threads": 2},
        "stages": stages, "truncated": {"hau": 3, "ibo": 0}, "seeds": [0, 1, 2],
        "config": {"model": {"teacher": "demo-teacher", "student": "demo-student"}, "data": {"max_length": 128},
                   "stages": [{"name": "stage2", "kind": "distill-task", "kd_weight": 1.0, "attention_weight": 1.0,
                               "hard_weight": 1.0, "temperature": 2.0}]},
    }


def _linked_pngs(report: str) -> list[str]:
    return re.findall(r"!\[(?:\\.|[^\]\\])*\]\((plots/[^)]+\.png)\)", report)  # alt text may hold \[ \]


def test_full_report(tmp_path, caplog):
    results = full_results(tmp_path)
    with caplog.at_level(logging.WARNING, logger="afrocomet"):
        path = write_report(results, tmp_path)
    assert not caplog.records, [r.getMessage() for r in caplog.records]  # no plot was skipped
    assert path == tmp_path / "report.md"
    report = path.read_text(encoding="utf-8")

    # Main table: languages x systems, percentages with std, avg row; best per row in bold.
    assert "| language | teacher (transformer) | student (hybrid KD) | student (KD only) |" in report
    assert "| Hausa (hau) | **70.00** | 66.00 ± 1.10 | 65.00 ± 1.10 | 60.00 ± 1.10 | 62.00 | 25.00 |" in report
    assert "| **avg** | **73.00** | 69.50 |" in report
    # Averages table and retention.
    assert "| system | accuracy | weighted F1 | macro F1 |" in report
    assert "| teacher (transformer) | 74.00 | 73.00 | 71.00 |" in report
    assert "weighted F1 95.0%, accuracy 96.0%, macro F1 94.0%" in report
    assert "hau 94.3%, ibo 96.1%" in report  # per-language retention: 66/70, 73/76
    # Ablation: hybrid 69.50 beats KD only 67.50 by 2.00 points, on both languages.
    assert "Best on average: **hybrid KD (logits + attention + labels)**, 2.00 points above KD only" in report
    assert "beats KD only (logits + labels, no attention) on 2 of 2 languages" in report
    assert "| no distillation (labels only) | 63.00 | -6.50 |" in report
    # Efficiency in readable units with ratios.
    assert "| parameters | 5.4 M | 666 k | 8.1× smaller |" in report
    assert "| size on disk | 21.6 MB | 2.7 MB | 8.0× smaller |" in report
    assert "| latency p50 | 3.10 ms | 0.60 ms | 5.2× faster |" in report
    assert "| throughput | 900 texts/s | 3,600 texts/s | 4.0× higher |" in report
    assert "| latency p95 | 4.00 ms | 0.90 ms | 4.4× faster |" in report
    assert "| peak memory | 123.5 MB | 41.0 MB | 3.0× smaller |" in report
    # Run description, stages, truncation, licence.
    assert "**total wall time**: 13 min 32 s" in report and "**seeds**: 0, 1, 2" in report
    assert "**test examples**: hau 5,303, ibo 3,682" in report and "cpu, 2 threads" in report
    assert "| stage2 | distill-task | 120 (early stop) | 4 | 1 min 36 s | 0.695 @ 100 |" in report
    assert "kd 1.2 → 0.31, attention 0.05 → 0.02, hard 1.1 → 0.6, total 2.35 → 0.93" in report
    assert "hau 3, ibo 0; 3 in all" in report
    assert "CC BY 4.0" in report and "Muhammad et al. (2023)" in report and "2502.18020" in report

    links = _linked_pngs(report)
    assert set(links) == {"plots/weighted_f1_by_language.png", "plots/confusion_teacher.png",
                          "plots/confusion_student.png", "plots/loss_stage2.png", "plots/loss_stage2_kd_only.png"}
    for link in links:
        data = (tmp_path / link).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, link
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary files left behind


def test_minimal_results_still_give_a_report(tmp_path):
    """One custom language, one system, no stages/efficiency/config: a short report, no crash."""
    results = {"languages": {"custom": {"student": {"weighted_f1": 0.5, "accuracy": 0.6}}},
               "stages": {"stage2": {"name": "stage2", "log": "logs/missing.jsonl"}, "odd": None},
               "efficiency": {"student": {"parameters": 10}}, "truncated": {}}
    report = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "| custom | 50.00 |" in report and "avg**" not in report  # one language: no avg row, no bold
    assert "user-supplied" in report and "CC BY 4.0" not in report and "AfriSenti" not in report
    assert "## Ablation" not in report and "Retention" not in report
    assert "| parameters | - | 10 | - |" in report
    links = _linked_pngs(report)
    assert links == ["plots/weighted_f1_by_language.png"]  # no confusion matrix, no stage log
    assert (tmp_path / links[0]).read_bytes().startswith(PNG_MAGIC)
    assert write_report({}, tmp_path / "empty").read_text(encoding="utf-8").startswith("# afrocomet run report")


def test_what_was_run_names_the_package_versions(tmp_path):
    """results.json `environment` -> one line of "What was run" (the key packages; the rest counted)."""
    env = {"python": "3.11.7", "platform": "Linux-6.1-x86_64", "packages": {
        "accelerate": "1.16.0", "numpy": "2.4.6", "safetensors": "0.8.0", "scikit-learn": "1.9.1", "scipy": "1.17.1",
        "tokenizers": "0.23.3", "torch": "2.13.0+cpu", "transformers": "5.25.0"}}
    report = write_report({**full_results(tmp_path), "environment": env}, tmp_path).read_text(encoding="utf-8")
    run_section = report.split("## What was run", 1)[1].split("\n## ", 1)[0]
    assert ("- **environment**: Python 3.11.7 on Linux-6.1-x86_64; torch 2.13.0+cpu, transformers 5.25.0, "
            "tokenizers 0.23.3, scikit-learn 1.9.1, numpy 2.4.6, safetensors 0.8.0, accelerate 1.16.0 and 1 more in "
            "results.json `environment` (identical metrics need identical versions: constraints.txt)") in run_section
    (tmp_path / "old").mkdir()
    old = write_report(full_results(tmp_path / "old"), tmp_path / "old").read_text(encoding="utf-8")
    assert "## What was run" in old and "**environment**" not in old  # results.json of older versions


def test_read_log_skips_broken_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "kd": 2.0}\nnot json\n[1, 2]\n{"dev_score": 0.3}\n{"step": 2, "dev_score": 0.4}\n{"ste',
                    encoding="utf-8")
    assert read_log(path) == [{"step": 1, "kd": 2.0}, {"step": 2, "dev_score": 0.4}]
    assert read_log(tmp_path / "absent.jsonl") == []


def test_model_card(tmp_path):
    card = model_card(full_results(tmp_path))
    assert card.startswith("---\n")
    front, body = card[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert meta["language"] == ["ha", "ig"] and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["shmuhammad/AfriSenti-twitter-sentiment"]
    assert "knowledge-distillation" in meta["tags"] and "f1" in meta["metrics"]
    first = meta["model-index"][0]["results"][0]
    assert first["dataset"]["config"] == "hau" and first["metrics"][0] == {"type": "f1", "name": "weighted F1", "value": 66.0}
    assert "| Hausa (hau) | 66.00 | 70.00 | 94.3% | 62.00 |" in body
    assert "| **avg** | 69.50 | 73.00 | 95.2% | 66.50 |" in body
    assert "AutoModelForSequenceClassification.from_pretrained" in body and "AutoTokenizer.from_pretrained" in body
    assert "Apache-2.0" in body and "CC BY 4.0" in body
    assert "muhammad-etal-2023-afrisenti" in body and "2502.18020" in body
    assert "It keeps 95.0% of the teacher's average weighted F1" in body
    assert "The hardest class is *neutral*" in body and "weakest is Hausa (hau)" in body
    assert "loss weights kd 1, attention 1, hard 1, T = 2" in body
    assert "stage2[kd_only]" not in body  # ablation copies are not this model's recipe


def test_model_card_says_how_languages_were_sampled(tmp_path):
    results = full_results(tmp_path)
    results["sampling"] = {"alpha": 0.3, "per_language": False, "search": {
        "stage": "stage2", "steps": 400, "dev_weighted_f1": {"0.3": 0.52, "0.5": 0.49, "1": 0.49}, "chosen": 0.3}}
    assert ("- training tweets drawn per language with p ∝ n^α, α = 0.3, chosen on dev among 0.3, 0.5, 1 "
            "(400-step probes of `stage2`)") in model_card(results)
    results["sampling"]["search"] = None
    assert "p ∝ n^α, α = 0.3, fixed" in model_card(results)
    results["sampling"]["per_language"] = True
    assert "p ∝ n^α" not in model_card(results)


@pytest.mark.parametrize("system", ["student_kd_only", "nonexistent"])
def test_model_card_of_other_systems(tmp_path, system):
    card = model_card(full_results(tmp_path), system=system)
    assert card.startswith("---\n") and "## How to use" in card
    assert "## Efficiency" not in card and "It keeps" not in card  # measured for the student only
    if system == "nonexistent":
        assert "model-index" not in card
        assert "| language | teacher | TF-IDF + LR |" in card and "| Hausa (hau) | 70.00 | 62.00 |" in card
    else:
        assert "| Hausa (hau) | 65.00 | 70.00 | 92.9% | 62.00 |" in card
        assert "This card describes the ablation `student_kd_only`: KD only (logits + labels, no attention)." in card


def test_efficiency_with_missing_values_and_log_paths(tmp_path):
    """Missing measures print "-" (or the run's ratio); logs may be absolute or only at logs/<name>/log.jsonl."""
    bench = {"teacher": {"parameters": 2_000_000_000, "disk_bytes": 1_500, "memory_bytes": 3e9,
                         "latency": {"p50_ms": 250.0, "p95_ms": 1500.0}, "throughput": {"texts_per_s": 40.0}},
             "student": {"parameters": 500, "latency": {"p50_ms": 50.0}},
             "ratios": {"memory_bytes": 2.5, "throughput": 0.5}, "device": "cuda"}
    elsewhere = tmp_path / "elsewhere" / "log.jsonl"
    elsewhere.parent.mkdir()
    elsewhere.write_text(_log_lines(["hard"], 20, 10), encoding="utf-8")
    fallback = tmp_path / "logs" / "s2" / "log.jsonl"
    fallback.parent.mkdir(parents=True)
    fallback.write_text(_log_lines(["kd"], 20, 100), encoding="utf-8")
    results = {"efficiency": bench, "stages": {"s1": {"log": str(elsewhere)}, "s2": {"kind": "distill-task"}}}
    report = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "| parameters | 2 B | 500 | 4000000.0× smaller |" in report
    assert "| size on disk | 1.5 kB | - | - |" in report
    assert "| peak memory | 3.0 GB | - | 2.5× smaller |" in report  # the run's ratio when a value is missing
    assert "| latency p50 | 250 ms | 50.00 ms | 5.0× faster |" in report
    assert "| latency p95 | 1.50 s | - | - |" in report
    assert "| throughput | 40.0 texts/s | - | 2.0× lower |" in report
    assert "measured on cuda." in report
    assert _linked_pngs(report) == ["plots/loss_s1.png", "plots/loss_s2.png"]


def test_the_probes_of_one_search_share_one_plot(tmp_path):
    """lr-search[*]<tag> and alpha-search[*]: one figure per search (a line per candidate), not one per probe."""
    stages = {}
    for name in ("stage2", "lr-search[0.001]", "lr-search[0.003]", "lr-search[0.001][paper]",
                 "lr-search[0.003][paper]", "alpha-search[0.3]", "alpha-search[1]"):
        log = tmp_path / "logs" / name / "log.jsonl"
        log.parent.mkdir(parents=True)
        log.write_text(_log_lines(["hard", "total"], 20, 10) + json.dumps({"step": 20, "dev_score": 0.5}) + "\n",
                       encoding="utf-8")
        stages[name] = {"kind": "distill-task"}
    stages["lr-search[paper]"] = {"kind": "lr-search", "steps": 0}  # the search's record: no log, no plot
    report = write_report({"stages": stages}, tmp_path).read_text(encoding="utf-8")
    assert _linked_pngs(report) == ["plots/loss_stage2.png", "plots/loss_lr-search.png",
                                    "plots/loss_lr-search_paper.png", "plots/loss_alpha-search.png"]
    assert all((tmp_path / p).stat().st_size > 0 for p in _linked_pngs(report))


def test_report_says_how_each_system_differs(tmp_path):
    """Issues 13 and 18: the teacher's α, the chosen C, the one training rule with each row's steps and lr,
    the three teachers with w chosen on dev, and the paper's student beside the hybrid one."""
    results = full_results(tmp_path)
    results["systems"] = ["teacher", "tfidf_baseline", "teacher_combined", "student", "student_paper"] + SYSTEMS[2:4] \
        + ["majority"]
    for i, lang in enumerate(("hau", "ibo")):
        results["languages"][lang]["tfidf_baseline"]["selection"] = {
            "C": (3.0, 10.0)[i], "dev_weighted_f1": {"0.3": 0.6, "1": 0.62, "3": 0.64, "10": 0.63}}
        results["languages"][lang]["teacher_combined"] = _metrics((0.71, 0.73)[i], 100, None, i)
        results["languages"][lang]["student_paper"] = _metrics((0.60, 0.62)[i], 100, None, i)
    results["average"]["teacher_combined"] = {"accuracy": 0.73, "weighted_f1": 0.72, "macro_f1": 0.70}
    results["average"]["student_paper"] = {"accuracy": 0.62, "weighted_f1": 0.61, "macro_f1": 0.60}
    results["ngram_teacher"] = {"weights": {"hau": 0.3, "ibo": 0.5}, "weight": 0.4, "temperature": 2.0, "folds": 5,
                                "dev_weighted_f1": {"hau": {"0": 0.69, "0.3": 0.71, "0.5": 0.7, "1": 0.6},
                                                    "ibo": {"0": 0.7, "0.3": 0.71, "0.5": 0.72, "1": 0.6}},
                                "out_of_fold_train_weighted_f1": {"hau": 0.76, "ibo": 0.78}}
    results["retention_teacher"] = "teacher_combined"
    results["stages"]["teacher-finetune"] = {"name": "teacher-finetune", "kind": "teacher-finetune", "steps": 1200}
    for tag, steps, best, lr, dev in (("", 2500, 2000, 0.003, 0.66), ("[paper]", 1800, 1500, 0.001, 0.63)):
        results["stages"][f"lr-search{tag}"] = {
            "kind": "lr-search", "steps": 0, "probe_steps": 297, "chosen": lr, "max_epochs": 3.0, "max_steps": None,
            "patience": 2, "min_steps": 1190, "dev_weighted_f1": {"0.000333": 0.5, "0.001": 0.55, "0.003": 0.58}}
        results["stages"][f"stage2{tag}"] = {"name": "stage2", "kind": "distill-task", "steps": steps,
                                             "best_score": dev, "best_step": best, "stopped_early": True}
    results["sampling"] = {"alpha": 0.3, "search": None, "per_language": False}
    results["config"]["data"]["sampling_alpha"] = 0.5
    report = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "## How the systems differ" in report
    assert "fixed α = 0.5 (`data.sampling_alpha`), while every student's task stage uses α = 0.3" in report
    assert ("at most 3 epochs, dev evaluation with early stopping after 2 evaluations without improvement, never "
            "before step 1,190 (stage 2's own budget), the best step kept; its lr chosen on dev among 0.000333, 0.001, "
            "0.003 (297-step probes)") in report
    assert "| student (hybrid KD) | 2,500 (early stop) | 2,000 | 0.003 | 66.00 |" in report
    assert "| student (paper: transformer teacher) | 1,800 (early stop) | 1,500 | 0.001 | 63.00 |" in report
    assert "C chosen on dev per language among 0.3, 1, 3, 10: hau 3, ibo 10" in report
    assert "attention weight 0 in stage 1 and stage 2" in report
    assert "| loss terms (both stages) |" in report
    assert "## The teachers" in report and ("w for the transformer chosen on each language's dev set among 0, 0.3, "
                                            "0.5, 1: hau **0.3** (dev 71.00; n-gram alone 69.00); ibo **0.5**") in report
    assert "w per language (hau 0.3, ibo 0.5) chosen on dev" in report
    assert "| combined teacher (transformer + n-gram) | 72.00 |" in report
    assert "On dev the student of the combined teacher scored +3.00 points against the paper's" in report
    assert "student / its teacher, the combined teacher (transformer + n-gram)" in report


def test_report_names_the_compared_initialisations(tmp_path):
    """--compare-init (issue 18): one row per init mode, what each did, and the modes skipped."""
    results = full_results(tmp_path)
    inits = ["student_teacher_init", "student_layers_init"]
    results["systems"] = SYSTEMS[:2] + inits + SYSTEMS[2:]
    for i, lang in enumerate(("hau", "ibo")):
        for k, system in enumerate(inits):
            results["languages"][lang][system] = _metrics((0.64, 0.70)[i] + 0.01 * k, 100, None, i + k)
    for k, system in enumerate(inits):
        results["average"][system] = {"accuracy": 0.68 + 0.01 * k, "weighted_f1": 0.67 + 0.01 * k, "macro_f1": 0.65}
    results["stages"]["student-init[teacher_init]"] = {"kind": "student-init", "steps": 0, "mode": "teacher",
                                                       "explained_variance": 0.8712, "layer_map": [[0, 5], [1, 11]]}
    results["stages"]["student-init[layers_init]"] = {"kind": "student-init", "steps": 0, "mode": "layers",
                                                      "layer_map": [[0, 5], [1, 11]], "lm_head": False}
    results["compare_init"] = {"student_init": "random", "compared": ["teacher", "layers"], "skipped": {}}
    report = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert "student (PCA init from teacher)" in report and "student (layers copied from teacher)" in report
    assert "principal directions of its word embeddings (keeping 87% of their variance)" in report
    assert "the teacher's embeddings and layers 5, 11 (0-based) copied whole" in report
    assert "The hybrid student starts from `student_init: random`." in report and "Not compared" not in report
    results["compare_init"] = {"student_init": "layers", "compared": ["random"],
                               "skipped": {"teacher": "student is a saved model"}}
    results["systems"][2:4] = ["student_random_init"]
    results["languages"]["hau"]["student_random_init"] = results["languages"]["hau"].pop("student_teacher_init")
    report = write_report(results, tmp_path / "again").read_text(encoding="utf-8")
    assert "**student (random init)**: random weights before stage 1" in report
    assert ("The hybrid student starts from `student_init: layers`. Not compared: `teacher` (student is a saved "
            "model).") in report


def test_teacher_preparation_and_a_teacher_below_the_majority(tmp_path):
    from afrocomet.report import render_report

    results = full_results(tmp_path)
    results.update({
        "vocab_trim": {"rows_kept": 11008, "rows_total": 250037, "rows_kept_fraction": 11008 / 250037,
                       "token_coverage": 1.0, "texts": 14172, "when": "before teacher fine-tuning",
                       "teacher": {"parameters_before": 117654915, "parameters_after": 25867779},
                       "student": {"parameters_before": 68937216, "parameters_after": 8100000}},
        "teacher_frozen": {"embeddings": True, "layers": 6, "of_layers": 12, "parameters": 25867779,
                           "trainable_parameters": 10795779},
        "teacher_dev": {"teacher": 0.1702, "majority": 0.1702, "per_language": {}, "below_majority": True},
        "teacher_below_majority": True,
        "time_estimate": {"seconds": 930.0, "stages": {}, "training_seconds": 700.0, "wall_seconds": 812.3},
        "tokenizer_coverage": {"normalize": "nfd-unknown", "rules": {"U+01F9 ǹ": "U+006E + U+0300"},
                               "per_language": {"hau": {"tokens": 1000, "unk": 2, "unk_rate": 0.002, "texts": 10,
                                                        "texts_with_unk": 2},
                                                "ibo": {"tokens": 500, "unk": 0, "unk_rate": 0.0, "texts": 5,
                                                        "texts_with_unk": 0}},
                               "per_language_normalized": {"hau": {"tokens": 1000, "unk": 1, "unk_rate": 0.001,
                                                                   "texts": 10, "texts_with_unk": 1},
                                                           "ibo": {"tokens": 500, "unk": 0, "unk_rate": 0.0,
                                                                   "texts": 5, "texts_with_unk": 0}}},
    })
    lines = render_report(results).splitlines()
    retention = next(i for i, line in enumerate(lines) if line.startswith("**Retention**"))
    assert lines[retention - 2].startswith("**Warning: the teacher scores no better than the majority baseline on dev**")
    assert "17.02 vs 17.02" in lines[retention - 2]
    report = "\n".join(lines)
    assert "## Teacher preparation" in report
    assert "11,008 of 250,037 rows kept (4.4%), before teacher fine-tuning" in report
    assert "teacher 117,654,915 → 25,867,779 parameters" in report
    assert "embeddings and layers 1-6 of 12 (10,795,779 of 25,867,779 parameters trained)" in report
    assert "no better than the majority baseline's 17.02" in report
    assert "estimated 15 min 30 s of training before it started (it took 11 min 40 s); the whole run took 13 min 32 s" in report
    assert "| Hausa (hau) | 1,000 | 2 | 0.200% | 2 of 10 | 0.100% |" in report
    assert "ǹ → U+006E + U+0300" in report
    # a teacher above the majority: no warning line
    results["teacher_below_majority"] = False
    assert "**Warning" not in render_report(results)
