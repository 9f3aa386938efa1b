"""Peak memory of one stage-1 training step: KD only vs each attention-matching mode vs a naive
seq²->seq² linear projection of the attention maps, on the paper's presets with random weights.

One step = teacher forward under inference_mode + student forward/backward + AdamW step, through
the trainer's own `HybridLoss` (MLM KD at masked positions, attention matching, MLM labels).
Every configuration runs in a fresh Python process, after a warm-up step on a short batch (AdamW
states exist), and its peak is measured with `afrocomet.bench.peak_memory` (CPU: the kernel's peak
RSS, reset via /proc/self/clear_refs, with glibc's mmap threshold fixed so that RSS follows live
tensors; CUDA: max_memory_allocated). `resident` is what the process holds before the step
(weights, AdamW states, the Python runtime); `step` is what the step adds on top; `model` is
total minus the runtime measured before any model existed, which is what `afrocomet doctor`
estimates (`estimate`).

    python benchmarks/attention_memory.py            # seq 128/256/512, batch 2 on CPU (32 on CUDA)
    python benchmarks/attention_memory.py --quick    # demo presets, seq 128
    python benchmarks/attention_memory.py --json out.json --device cuda --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, mlm_batch, now, random_model, table, write_json  # noqa: E402

from afrocomet.distill.losses import attention_mse  # noqa: E402
from afrocomet.distill.matching import AttentionMatcher  # noqa: E402

MODES = ("kd-only", "mean", "projection", "relations", "naive-linear")
GIB = 1024**3


class NaiveLinearMatcher(AttentionMatcher):
    """What "a linear projection of the student's attention maps" reads as literally: one learned
    nn.Linear(s², s²) (shared by all layer pairs) from a student head-mean map to a teacher map.
    (s²)² + s² parameters: 268M at s=128, 4.3B at 256, 68.7B at 512."""

    keep = "pooled"

    def __init__(self, layer_map, seq_len: int):
        super().__init__(layer_map)
        n = seq_len * seq_len
        self.proj = torch.nn.utils.skip_init(nn.Linear, n, n)  # [s², s²]
        with torch.no_grad():
            self.proj.weight.normal_(0.0, 1e-4)
            self.proj.bias.zero_()

    def forward(self, student, teacher, mask=None):
        mask = self._mask(student, teacher, mask)
        s_maps, t_maps = student.pooled(), teacher.pooled()  # {layer: [b, s, s]}
        losses = []
        for s, t in self.layer_map:
            b, n, _ = s_maps[s].shape
            projected = self.proj(s_maps[s].reshape(b, n * n)).view(b, n, n)  # [b, s, s]
            losses.append(attention_mse(projected, t_maps[t], mask))
        return torch.stack(losses).mean()


def naive_parameters(seq_len: int) -> int:
    return (seq_len * seq_len) ** 2 + seq_len * seq_len


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(mode: str, seq: int, batch: int, teacher_name: str, student_name: str, device: str) -> dict:
    """One configuration, measured in this (fresh) process."""
    from afrocomet.bench import peak_memory
    from afrocomet.config import StageConfig
    from afrocomet.distill.memory import estimate_memory
    from afrocomet.device import autocast_for
    from afrocomet.distill.objective import HybridLoss

    dev = torch.device(device)
    t0 = time.perf_counter()
    runtime = 0 if dev.type == "cuda" else _rss()  # Python + torch before any model exists
    teacher = random_model(teacher_name, "mlm", seed=0).to(dev).eval().requires_grad_(False)
    student = random_model(student_name, "mlm", seed=1).to(dev).train()
    cfg = StageConfig(name=mode, kind="distill-mlm", batch_size=batch, temperature=2.0,
                      matching="mean" if mode in ("kd-only", "naive-linear") else mode,
                      attention_weight=0.0 if mode == "kd-only" else 1.0)
    loss_fn = HybridLoss(cfg, student, teacher).to(dev)
    if mode == "naive-linear":
        loss_fn.matcher = NaiveLinearMatcher(loss_fn.matcher.layer_map, seq).to(dev)
    params = [p for m in (student, loss_fn) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    vocab = student.config.vocab_size
    data = {k: v.to(dev) for k, v in mlm_batch(batch, seq, vocab, seed=seq).items()}
    short = {k: v.to(dev) for k, v in mlm_batch(1, 16, vocab, seed=0).items()}

    def step(batch: dict[str, torch.Tensor] = data) -> None:
        with autocast_for(dev):
            total = loss_fn.balancer(loss_fn(student, teacher, batch, cfg.temperature))
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if mode != "naive-linear":
        step(short)  # warm-up on a short batch: AdamW states exist before the measured step
    else:  # the projection is sized for `seq`: warm up its AdamW states by hand
        for p in params:
            optimizer.state[p].update(step=torch.tensor(1.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
    resident = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else _rss()
    start = time.perf_counter()
    peak = peak_memory(step, dev)
    step_s = time.perf_counter() - start
    row = {"mode": mode, "seq": seq, "batch": batch, "runtime_bytes": runtime, "resident_bytes": resident, "step_bytes": peak,
           "total_bytes": resident + peak, "step_seconds": round(step_s, 2),
           "extra_parameters": sum(p.numel() for p in loss_fn.parameters()),
           "process_seconds": round(time.perf_counter() - t0, 1)}
    if mode != "naive-linear":
        est = estimate_memory(student, teacher, cfg, seq, dev)
        row["estimate_bytes"] = est["total"]
    return row


def run_one(mode: str, seq: int, batch: int, args) -> dict:
    """Run `worker` in a fresh interpreter; a naive projection too big for memory is not started."""
    from afrocomet.distill.memory import available_memory

    if mode == "naive-linear":
        need = 16 * naive_parameters(seq)  # fp32 weights + grads + AdamW's two moments
        free = available_memory(args.device)
        if free is not None and need > free:
            return {"mode": mode, "seq": seq, "batch": batch, "extra_parameters": naive_parameters(seq),
                    "note": f"does not fit: the projection alone needs {need / GIB:,.0f} GiB "
                            f"(weights+grads+AdamW) of {free / GIB:.0f} GiB free"}
    cmd = [sys.executable, __file__, "--worker", mode, "--seqs", str(seq), "--batch", str(batch),
           "--teacher", args.teacher, "--student", args.student, "--device", args.device]
    # glibc's dynamic mmap threshold makes peak RSS of identical runs differ by ~0.1 GiB; fixed at 64 KiB,
    # every tensor gets its own mapping, freed at once, and identical runs agree to about 1 MiB
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"mode": mode, "seq": seq, "batch": batch, "note": f"failed (exit {proc.returncode}): {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_ratios(rows: list[dict]) -> None:
    base = {r["seq"]: r for r in rows if r["mode"] == "kd-only" and "total_bytes" in r}
    for r in rows:
        b = base.get(r["seq"])
        if b and "total_bytes" in r:
            r["total_vs_kd"] = r["total_bytes"] / b["total_bytes"]
            r["step_vs_kd"] = r["step_bytes"] / b["step_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="demo presets, seq 128 only")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument("--seqs", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, 32 on CUDA")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--teacher", default=None, help="preset (default afroxlmr-large; demo-teacher with --quick)")
    parser.add_argument("--student", default=None, help="preset (default comet; demo-student with --quick)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per configuration")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    seqs = args.seqs or ([128] if args.quick else [128, 256, 512])
    batch = args.batch or (32 if cuda else 2)
    args.teacher = args.teacher or ("demo-teacher" if args.quick else "afroxlmr-large")
    args.student = args.student or ("demo-student" if args.quick else "comet")
    if args.worker:
        print(json.dumps(worker(args.worker, seqs[0], batch, args.teacher, args.student, args.device)))
        return

    started, t0 = now(), time.perf_counter()
    rows = []
    for seq in seqs:
        for mode in args.modes:
            rows.append(run_one(mode, seq, batch, args))
            r = rows[-1]
            print(f"  {mode:13s} seq {seq:4d}: " + (f"{r['total_bytes'] / GIB:.2f} GiB total, +{r['step_bytes'] / GIB:.2f} "
                  f"GiB in the step ({r['process_seconds']}s)" if "total_bytes" in r else r["note"]), flush=True)
    add_ratios(rows)
    for r in rows:
        if "total_bytes" in r:
            r["model_bytes"] = r["total_bytes"] - r["runtime_bytes"]  # what afrocomet's estimate predicts
    shown = [{**r, **{k: r[k] / GIB for k in ("resident_bytes", "step_bytes", "total_bytes", "model_bytes", "estimate_bytes") if k in r}}
             for r in rows]
    print(f"\n{args.teacher} -> {args.student}, batch {batch}, device {args.device} (GiB; ratios vs kd-only at the same seq)")
    print(table(shown, ["mode", "seq", "extra_parameters", "resident_bytes", "step_bytes", "total_bytes",
                        "total_vs_kd", "step_vs_kd", "model_bytes", "estimate_bytes", "note"]))
    longest = max(seqs)
    worst = max((r["total_vs_kd"] for r in rows if r["seq"] == longest and r["mode"] in ("mean", "projection", "relations")
                 and "total_vs_kd" in r), default=None)
    if worst is not None:
        verdict = "meets" if worst <= 1.10 else "misses"
        print(f"\nat seq {longest}, matching adds at most {100 * (worst - 1):+.1f}% total memory over KD only "
              f"({verdict} the <= 10% goal)")
    result = {"benchmark": "attention_memory", "created": started, "teacher": args.teacher, "student": args.student,
              "batch": batch, "device": args.device, "seqs": seqs, "machine": machine(), "rows": rows,
              "max_total_overhead_at_longest_seq": worst, "wall_seconds": round(time.perf_counter() - t0, 1)}
    if args.json_path:
        write_json(args.json_path, result)
        print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
