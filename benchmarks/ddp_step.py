"""Time of one data-parallel training step: the old flat all-reduce after backward vs DDP (gloo, CPU).

    flat : HybridLoss forward/backward, then one flat all-reduce of every gradient after backward
           (a verbatim copy of `Processes.average_gradients` as of commit 91cadb4, the code this
           replaced)
    ddp  : the trainer's path now: `parallel.Synchronised` (DDP through accelerate; gradient buckets
           all-reduce while backward still runs; `no_sync` on accumulation micro-steps)

Each row has its own copy of the student, loss module and AdamW; rows run round-robin (one step
each, in turn) inside the same processes, so noise from other jobs hits them alike. Every step
starts after a barrier; rank 0's time of forward + backward + synchronisation + AdamW is recorded.
1 process (the global batch whole; no synchronisation in either row) and 2 processes (rows
`rank::2` of the same global batch) alternate for `--rounds` rounds; medians pool the rounds.
One thread per process.

    python benchmarks/ddp_step.py            # demo-teacher -> demo-student, stage 2 terms, batch 32, seq 64
    python benchmarks/ddp_step.py --quick    # fewer steps, one round
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import busy_before, machine, now, random_model, table, timing_fields, with_allocator_env, write_json  # noqa: E402,E501

ROWS = ("flat", "ddp")


def flat_average(procs, params: list[torch.nn.Parameter]) -> None:
    """The replaced code path: all-reduce the gradients (one flat buffer) after backward, / world."""
    if procs.world == 1:
        return
    import torch.distributed as dist

    has = procs.all_sum(torch.tensor([p.grad is not None for p in params], dtype=torch.float32))
    active = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in active]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= procs.world
    offset = 0
    for p in active:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n


def make_step(row: str, procs, student, teacher, args):
    """A closure running one optimizer step (args.grad_accum micro-steps) of `row` on its own copies."""
    from afrocomet.config import StageConfig
    from afrocomet.distill.parallel import Processes, Synchronised
    from afrocomet.distill.trainer import HybridLoss

    student = copy.deepcopy(student).train()
    cfg = StageConfig(name=row, kind="distill-task", matching=args.matching, temperature=2.0)
    loss_fn = HybridLoss(cfg, student, teacher)
    params = [p for m in (student, loss_fn) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    synced = Synchronised(procs, student, loss_fn) if row == "ddp" else None

    def step(batches: list[dict[str, torch.Tensor]]) -> None:
        for i, batch in enumerate(batches):
            local = procs.shard(batch)
            share = procs.shares(local, "classification")
            if synced is None:
                terms = Processes.apply_shares(loss_fn(student, teacher, local, cfg.temperature), share)
                (loss_fn.balancer(terms) / len(batches)).backward()
            else:
                with synced.sync(final=i == len(batches) - 1):
                    _, total = synced(teacher, local, cfg.temperature, share)
                    (total / len(batches)).backward()
        if synced is None:
            flat_average(procs, params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def batches(args, vocab: int, step: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(step)
    out = []
    for _ in range(args.grad_accum):
        ids = torch.randint(4, vocab, (args.batch, args.seq), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                    "labels": torch.randint(0, 3, (args.batch,), generator=g)})
    return out


def measure(procs, args) -> dict[str, list[float]]:
    """Seconds per step of each row (round-robin), on this process."""
    torch.set_num_threads(1)
    teacher = random_model(args.teacher, "classification", vocab_size=args.vocab, seed=0)
    teacher.eval().requires_grad_(False)
    student = random_model(args.student, "classification", vocab_size=args.vocab, seed=1)
    runs = {row: make_step(row, procs, student, teacher, args) for row in ROWS}
    times: dict[str, list[float]] = {row: [] for row in ROWS}
    for i in range(args.warmup + args.steps):
        data = batches(args, student.config.vocab_size, i)
        for row, step in runs.items():
            procs.barrier()
            start = time.perf_counter()
            step(data)
            if i >= args.warmup:
                times[row].append(time.perf_counter() - start)
    return times


def _worker(rank: int, port: int, out: str, args) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from afrocomet.distill.parallel import processes

    times = measure(processes(), args)
    if rank == 0:
        Path(out).write_text(json.dumps(times))


def two_processes(args) -> dict[str, list[float]]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "times.json")
        mp.start_processes(_worker, args=(port, out, args), nprocs=2, start_method="spawn")
        return json.loads(Path(out).read_text())


def main() -> None:
    with_allocator_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 steps, one round")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument("--teacher", default="demo-teacher")
    parser.add_argument("--student", default="demo-student")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary of both models (default: the presets')")
    parser.add_argument("--matching", default="mean", help="attention matching (projection adds loss-module weights)")
    parser.add_argument("--batch", type=int, default=32, help="global batch per micro-step")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row and round (default 20)")
    parser.add_argument("--rounds", type=int, default=None, help="1-process/2-process rounds (default 2)")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    args.steps = args.steps or (10 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 2)
    from afrocomet.distill.parallel import Processes

    started, t0, load_before = now(), time.perf_counter(), machine().get("load_average")
    times = {world: {row: [] for row in ROWS} for world in (1, 2)}
    for _ in range(rounds):
        for world, got in ((1, measure(Processes(), args)), (2, two_processes(args))):
            for row in ROWS:
                times[world][row] += got[row]
    one = {row: statistics.median(times[1][row]) for row in ROWS}
    rows = [{"row": row, "processes": world, "median_ms": 1000 * statistics.median(v), "min_ms": 1000 * min(v),
             "vs_1proc_same_row": statistics.median(v) / one[row], "n": len(v)}
            for world in (1, 2) for row, v in times[world].items()]
    ratio = statistics.median(times[2]["ddp"]) / statistics.median(times[2]["flat"])
    load_after = machine().get("load_average")
    print(f"{args.teacher} -> {args.student} (vocab {args.vocab or 'of the presets'}), stage-2 terms ({args.matching} matching), global batch {args.batch}, "
          f"seq {args.seq}, grad_accum {args.grad_accum}; median of {args.steps} steps x {rounds} rounds "
          f"(round-robin); load average before {load_before}, after {load_after}")
    print(table(rows, ["row", "processes", "median_ms", "min_ms", "vs_1proc_same_row", "n"]))
    busy = busy_before(load_before, "other processes compete for the CPU and the timings are noisy (compare ratios)")
    print(f"\n2 processes: ddp step = {ratio:.3f}x flat all-reduce step")
    result = {"benchmark": "ddp_step", "created": started, "args": vars(args), "rounds": rounds, "rows": rows,
              "times_s": {str(w): t for w, t in times.items()}, "ddp_vs_flat_2proc": ratio,
              **timing_fields(load_before, load_after, busy, t0)}
    if args.json_path:
        write_json(args.json_path, result)
        print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
