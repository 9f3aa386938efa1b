"""Time of one stage-1 training step with the hybrid loss vs the same models without it.

    baseline : teacher forward (inference_mode) + student forward/backward on the MLM labels + AdamW
    kd-only  : baseline + MLM KD on the teacher's logits at masked positions
    hybrid-* : kd-only + attention matching (mean / projection / relations): the paper's stage 1

Every row goes through the trainer's own `HybridLoss` and `model_outputs`; each row has its own
copy of the student and its own AdamW. Rows run round-robin (one step each, in turn), so noise
from other processes hits them alike; the median (and min) over `--steps` steps is reported.

The script re-runs itself with glibc told to keep freed memory (MALLOC_MMAP_MAX_=0, no trimming):
otherwise every step maps and faults in ~1 GB afresh (gradients, the dense embedding gradient,
vocabulary logits) and kernel time makes identical steps vary between 1.7 and 3.1 s on 2 cores.

    python benchmarks/step_cost.py            # afroxlmr-large -> comet, batch 2, seq 128 (CPU)
    python benchmarks/step_cost.py --quick    # demo-teacher -> demo-student, batch 16, seq 128
    python benchmarks/step_cost.py --json out.json --device cuda --batch 32
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import busy_before, machine, mlm_batch, now, random_model, table, timing_fields, with_allocator_env, write_json  # noqa: E402,E501

from afrocomet.config import StageConfig  # noqa: E402
from afrocomet.device import autocast_for  # noqa: E402
from afrocomet.distill.objective import HybridLoss, model_outputs  # noqa: E402

ROWS = ("baseline", "kd-only", "hybrid-mean", "hybrid-projection", "hybrid-relations")


def make_step(name: str, student, teacher, batch: dict, device: torch.device):
    """A closure running one optimiser step of configuration `name` on its own copy of the student."""
    student = copy.deepcopy(student).train()
    matching = name.split("-", 1)[1] if name.startswith("hybrid-") else "mean"
    cfg = StageConfig(name=name, kind="distill-mlm", matching=matching, temperature=2.0,
                      kd_weight=0.0 if name == "baseline" else 1.0,
                      attention_weight=1.0 if name.startswith("hybrid-") else 0.0)
    loss_fn = HybridLoss(cfg, student, teacher).to(device)
    params = [p for m in (student, loss_fn) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def step() -> None:
        with autocast_for(device):
            if name == "baseline":  # the teacher still runs, its output unused: cost of the models alone
                with torch.inference_mode():
                    model_outputs(teacher, batch, "mlm")
            total = loss_fn.balancer(loss_fn(student, teacher, batch, cfg.temperature))
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def teacher_forward(teacher, batch, device):
    def step() -> None:
        with autocast_for(device), torch.inference_mode():
            model_outputs(teacher, batch, "mlm")
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step




def main() -> None:
    with_allocator_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="demo presets, batch 16")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument("--teacher", default=None, help="preset (default afroxlmr-large; demo-teacher with --quick)")
    parser.add_argument("--student", default=None, help="preset (default comet; demo-student with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="default 2 (16 with --quick; 32 on CUDA)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 10; 20 with --quick)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    teacher_name = args.teacher or ("demo-teacher" if args.quick else "afroxlmr-large")
    student_name = args.student or ("demo-student" if args.quick else "comet")
    batch_size = args.batch or (32 if device.type == "cuda" else 16 if args.quick else 2)
    steps = args.steps or (20 if args.quick else 10)

    started, t0, load_before = now(), time.perf_counter(), machine().get("load_average")
    teacher = random_model(teacher_name, "mlm", seed=0).to(device).eval().requires_grad_(False)
    student = random_model(student_name, "mlm", seed=1).to(device)
    batch = {k: v.to(device) for k, v in mlm_batch(batch_size, args.seq, student.config.vocab_size, seed=0).items()}
    runs = {name: make_step(name, student, teacher, batch, device) for name in ROWS}
    runs["teacher forward"] = teacher_forward(teacher, batch, device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.warmup + steps):
        for name, step in runs.items():  # round-robin: the same noise for every row
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["baseline"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append({"row": name, "median_ms": 1000 * median, "min_ms": 1000 * min(values), "max_ms": 1000 * max(values),
                     "vs_baseline": median / base, "n": len(values)})
    load_after = machine().get("load_average")
    print(f"{teacher_name} -> {student_name}, batch {batch_size}, seq {args.seq}, device {args.device}, "
          f"{torch.get_num_threads()} threads; median of {steps} steps (round-robin); "
          f"load average before {load_before}, after {load_after}")
    print(table(rows, ["row", "median_ms", "min_ms", "max_ms", "vs_baseline", "n"]))
    busy = busy_before(load_before, "other processes compete for the CPU and the timings are noisy (compare min_ms, "
                                    "or run again when it is quiet)")
    hybrid = next(r for r in rows if r["row"] == "hybrid-mean")["vs_baseline"]
    print(f"\nhybrid (mean matching) step = {hybrid:.2f}x baseline ({'meets' if hybrid <= 1.3 else 'misses'} the <= 1.3x goal)")
    result = {"benchmark": "step_cost", "created": started, "teacher": teacher_name, "student": student_name,
              "batch": batch_size, "seq": args.seq, "device": args.device, "steps": steps,
              "rows": rows, "times_s": times, "hybrid_vs_baseline": hybrid,
              **timing_fields(load_before, load_after, busy, t0)}
    if args.json_path:
        write_json(args.json_path, result)
        print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
