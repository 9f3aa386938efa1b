"""Inference cost of the paper's student vs its teacher: CPU latency, throughput, disk and memory.

    teacher          : afroxlmr-large (560M), PyTorch fp32 (eager), random weights: the reference
    student          : comet (69M), PyTorch fp32 (eager), random weights, saved as a folder
    teacher-compiled : the same teacher through torch.compile (fp32, dynamic shapes)
    student-compiled : the same comet through torch.compile
    onnx-fp32        : that comet folder exported by `afrocomet.export.export_onnx`
    onnx-int8        : its static int8 quantisation (export's default, calibrated on training tweets)
    onnx-int8-dynamic: its dynamic int8 quantisation (`--int8-mode dynamic`: onnxruntime's quantize_dynamic)

All run in this one process, one after the other, on the same real AfriSenti test tweets
(drawn with seed 0) through `afrocomet.bench.run_bench`, the code behind `afrocomet bench --compile`.
The presets have no tokenizer of their own: one unigram tokenizer (8,000 pieces) is trained here on
10,000 AfriSenti train tweets and used by every column, so every model sees the same token
sequences. Goals: comet fp32 p50 latency at batch 1 >= 40x lower than the teacher's (PyTorch, the
same execution for both: eager vs eager, compiled vs compiled), int8 ONNX comet >= 100x lower than
the eager teacher. The 560M teacher is never exported: its PyTorch fp32 is the reference.
Compiling costs about 1 minute per model and batch size on 2 cores (not timed; `--no-compile` skips it).

    python benchmarks/latency.py --quick      # 16 tweets, 2 warm-up calls: about 7 minutes on 2 idle cores
    python benchmarks/latency.py              # 200 tweets
    python benchmarks/latency.py --json out.json --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, now, write_json  # noqa: E402

from afrocomet.bench import bench_rows, random_weights_model, run_bench, shared_tokenizer  # noqa: E402
from afrocomet.data.afrisenti import load_afrisenti  # noqa: E402
from afrocomet.data.schema import DEFAULT_LANGUAGES  # noqa: E402
from afrocomet.export import export_onnx  # noqa: E402
from afrocomet.quantize import write_int8  # noqa: E402

TEACHER, STUDENT = "afroxlmr-large", "comet"
GOALS = {"onnx-int8": 100.0, "student": 40.0}  # p50 latency, teacher / column
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared/data/afrisenti"  # the repo's sibling, if present


def export_student(tmp: Path, datasets: dict, n_parity: int) -> tuple[Path, Path, dict]:
    """A random-weight comet classifier saved with the shared tokenizer, and its ONNX export (+ int8, static
    and dynamic)."""
    tokenizer, _ = shared_tokenizer([TEACHER, STUDENT], datasets)
    student = random_weights_model(STUDENT, seed=1)
    student.save_pretrained(tmp / "comet")
    tokenizer.save_pretrained(tmp / "comet")
    del student
    texts = [t for ds in datasets.values() for t in ds.texts("test")]
    parity = export_onnx(tmp / "comet", tmp / "comet-onnx", int8=True, texts=texts[:: max(1, len(texts) // n_parity)],
                         max_length=128)
    write_int8(tmp / "comet-onnx" / "model.onnx", tmp / "comet-onnx" / "model.int8-dynamic.onnx", "dynamic")
    return tmp / "comet", tmp / "comet-onnx", parity


def _met(x: float, goal: float) -> str:
    return "met" if x >= goal else "NOT met"


def goal_lines(result: dict, parity: dict) -> list[str]:
    r = result["ratios"]
    lines = [f"comet fp32 p50 latency, eager vs eager: {r['student']['latency']:.1f}x lower than the teacher "
             f"(goal >= 40x): {_met(r['student']['latency'], GOALS['student'])}"]
    if "ratios_compiled" in result:
        c = result["ratios_compiled"]["latency"]
        lines.append(f"comet fp32 p50 latency, compiled vs compiled: {c:.1f}x lower (goal >= 40x): "
                     f"{_met(c, GOALS['student'])}; compiled comet vs eager teacher: "
                     f"{r['student-compiled']['latency']:.1f}x")
    lines.append(f"comet int8 ONNX p50 latency: {r['onnx-int8']['latency']:.1f}x lower (goal >= 100x): "
                 f"{_met(r['onnx-int8']['latency'], GOALS['onnx-int8'])}")
    lines.append(f"comet int8 ONNX, dynamic: {r['onnx-int8-dynamic']['latency']:.1f}x lower")
    for name in ("student", "onnx-fp32", "onnx-int8", "onnx-int8-dynamic"):
        lines.append(f"{name}: disk {r[name]['disk_bytes']:.1f}x smaller, peak memory {r[name]['memory_bytes']:.1f}x "
                     f"less, throughput {r[name]['throughput']:.1f}x")
    lines.append(f"export parity (random weights, {parity['texts']['n']} tweets): fp32 max |logit diff| "
                 f"{parity['fp32']['max_abs_logit_diff']:.1e}; int8 label agreement "
                 f"{100 * parity['int8']['label_agreement']:.1f}% (not meaningful for random weights)")
    return lines


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))


_START = time.perf_counter()


def step(what: str) -> None:
    print(f"[{time.perf_counter() - _START:6.1f} s] {what}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 tweets and 2 warm-up calls instead of 200 and 5")
    parser.add_argument("--texts", type=int, default=None, help="tweets to time (default 200; 16 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--data-dir", default=str(SHARED_DATA) if SHARED_DATA.is_dir() else None,
                        help="AfriSenti folder (default: ../shared/data/afrisenti if present, else $AFROCOMET_DATA, cache)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile columns")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    args = parser.parse_args()
    n_texts = args.texts or (16 if args.quick else 200)
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    datasets = load_afrisenti(DEFAULT_LANGUAGES, args.data_dir, splits=("train", "test"))
    with tempfile.TemporaryDirectory(prefix="afrocomet-latency-") as tmp:
        student_dir, onnx_dir, parity = export_student(Path(tmp), datasets, n_parity=max(n_texts, 100))
        step("trained the tokenizer, saved and exported comet (fp32 + int8, parity checked)")
        result = run_bench(TEACHER, str(student_dir), str(onnx_dir), languages=list(DEFAULT_LANGUAGES),
                           data_dir=args.data_dir, n_texts=n_texts, device="cpu", max_length=128,
                           warmup=2 if args.quick else 5, compile=not args.no_compile)
    step("measured the four columns")
    result["columns"]["teacher"]["model"] = f"preset {TEACHER} (random weights)"
    for name in [c for c in result["columns"] if c.startswith("student")]:
        result["columns"][name]["model"] = f"preset {STUDENT} (random weights, saved)"
    print(f"{TEACHER} vs {STUDENT} on the CPU, {result['threads']} threads; {result['texts']['source']}; "
          f"one tokenizer for all: {result['tokenizer'].split(' of ')[0]} trained on AfriSenti train tweets")
    print_table(*bench_rows(result))
    print("ratios: teacher / column (throughput: column / teacher)")
    print("\n".join(goal_lines(result, parity)))
    if args.json_path:
        write_json(args.json_path, {"machine": machine(), "time": now(), "result": result, "parity": parity})


if __name__ == "__main__":
    main()
