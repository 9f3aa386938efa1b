"""The built-in default run, measured: `afrocomet run` exactly as the README's first command runs it
(a subprocess), then its table (weighted F1 per language, avg, seen and unseen), and issue 18's goals
for the default run, each with its measured value and met / not met:

- the combined teacher >= char TF-IDF on the average;
- the student distilled from it >= the best labels-only student + 1 point;
- the student >= 95% of its own teacher (retention, weighted F1);
- >= 4x lower batch-1 p50 latency than the transformer teacher, both in PyTorch (measured side by side by the run);
- the run <= 15 minutes (the run's own wall time; the install adds about a minute).

Printed and written (JSON; `--readme` replaces this script's section of benchmarks/README.md).

    python benchmarks/default_run.py --readme                  # the run (about 10-15 min on 2 cores), then the table
    python benchmarks/default_run.py --skip-run --out runs/afrocomet --readme   # an existing run's results
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
from pretrained_teacher import replace_section  # noqa: E402
from afrocomet.bench.efficiency import latency_ratio  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/afrisenti"
README = Path(__file__).resolve().parent / "README.md"
HEADING = "## default_run.py"
SEEN, UNSEEN = ("hau", "swa"), ("ibo", "kin", "yor")
COLUMNS = {"teacher": "transformer teacher", "tfidf_baseline": "char n-gram", "teacher_combined": "combined teacher",
           "student": "student (hybrid)", "student_paper": "student (paper)", "student_kd_only": "KD only",
           "student_no_distill": "labels only", "majority": "majority"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("/tmp/afrocomet-default-run"), help="the run folder")
    p.add_argument("--json", type=Path, default=None, help="default: OUT/benchmark.json")
    p.add_argument("--readme", action="store_true", help="write the section into benchmarks/README.md")
    p.add_argument("--skip-run", action="store_true", help="reuse the finished run in --out")
    return p.parse_args()


def score_rows(results: dict) -> tuple[list[dict], list[str]]:
    """Systems as rows; avg, seen and unseen weighted F1 (%) as columns."""
    langs = results["languages"]
    out = []
    for system, name in COLUMNS.items():
        if system not in results["average"]:
            continue
        row = {"system": name, "avg": 100 * results["average"][system]["weighted_f1"]}
        for label, group in (("seen (hau, swa)", SEEN), ("unseen (ibo, kin, yor)", UNSEEN)):
            if all(lang in langs for lang in group):
                row[label] = 100 * sum(langs[lang][system]["weighted_f1"] for lang in group) / len(group)
        out.append(row)
    return out, ["system", *dict.fromkeys(k for r in out for k in r if k != "system")]


def goal_lines(r: dict) -> list[str]:
    """The default run's goals (issue 18), each with its measured value and whether it is met."""
    avg = {s: 100 * m["weighted_f1"] for s, m in r["average"].items()}
    teacher = r.get("retention_teacher", "teacher")
    labels = max(v for s, v in avg.items() if s in ("student_no_distill", "student_labels_converged"))
    latency, how = latency_ratio(r["efficiency"])  # the interleaved rounds' median where the run has them
    threads = {side: (r["efficiency"].get(side) or {}).get("latency", {}).get("threads")
               for side in ("teacher", "student")}  # each model's faster count (afrocomet.bench.best_latency)
    at = "" if None in threads.values() else f", threads: teacher {threads['teacher']}, student {threads['student']}"

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = [f"- combined teacher >= char TF-IDF (avg): {avg.get('teacher_combined', avg['teacher']):.2f} vs "
             f"{avg['tfidf_baseline']:.2f} ({met(avg.get('teacher_combined', avg['teacher']) >= avg['tfidf_baseline'])})",
             f"- student >= best labels-only student + 1: {avg['student']:.2f} vs {labels:.2f} + 1 "
             f"({met(avg['student'] >= labels + 1)})",
             f"- student >= 95% of its teacher ({teacher}): {r['retention']['weighted_f1']:.3f} "
             f"({met(r['retention']['weighted_f1'] >= 0.95)})",
             f"- >= 4x lower batch-1 p50 latency than the transformer teacher (PyTorch, side by side, {how}{at}): "
             f"{latency:.2f}x "
             f"({met(latency >= 4)})",
             f"- run <= 15 min: {r['wall_seconds'] / 60:.1f} min ({met(r['wall_seconds'] <= 900)})"]
    if "student_paper" in avg:
        lines.append(f"- student of the combined teacher vs the paper's student: {avg['student']:.2f} vs "
                     f"{avg['student_paper']:.2f} ({avg['student'] - avg['student_paper']:+.2f})")
    return lines


def readme_section(summary: dict) -> str:
    r = summary["results"]
    eff = r["efficiency"]
    busy = eff.get("load") or {}
    return "\n".join([
        HEADING, "", f"`{summary['command_line']}` ({summary['date']}, {summary['machine']['cpu_count']} cores; the run "
        f"took {r['wall_seconds']:.0f} s{'; the machine was busy while timing' if busy.get('busy') else ''}). "
        "Weighted F1 (%) on the AfriSenti test sets, one seed:", "", "```", summary["score_table"], "```", "",
        "Goals (issue 18), as measured:", "", *goal_lines(r), ""]) + "\n"


def main() -> None:
    args = parse_args()
    cmd = [sys.executable, "-m", "afrocomet", "run", "--data-dir", str(args.data_dir), "--out", str(args.out),
           "--overwrite"]
    t0 = time.perf_counter()
    if not args.skip_run:
        subprocess.run(cmd, check=True)
    results = json.loads((args.out / "results.json").read_text())
    rows, columns = score_rows(results)
    score_table = table([{k: f"{v:.2f}" if isinstance(v, float) else v for k, v in row.items()} for row in rows], columns)
    print(score_table, "", *goal_lines(results), sep="\n")
    summary = {"date": now(), "machine": machine(), "command": cmd,
               "command_line": "python benchmarks/default_run.py " + " ".join(a for a in sys.argv[1:] if a != "--skip-run"),
               "seconds": None if args.skip_run else round(time.perf_counter() - t0, 1), "rows": rows,
               "score_table": score_table, "goals": goal_lines(results), "results": results}
    write_json(args.json or args.out / "benchmark.json", summary)
    if args.readme:
        README.write_text(replace_section(README.read_text(), readme_section(summary)))
        print(f"wrote the section into {README}")


if __name__ == "__main__":
    main()
