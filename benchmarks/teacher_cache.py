"""Stage 2 (task distillation) with and without the teacher-output cache, side by side.

Both runs train the same student from the same weights on the same real AfriSenti tweets through
`train_stage` (hybrid loss: class KD + mean attention matching + gold labels), once running the
teacher every step and once reading its outputs from a freshly built cache (distill/cache.py).
Printed: seconds per epoch without the cache, cache build time (key hashing included), seconds
per epoch with it, the stage's ratio, and the largest per-step difference of each loss term.

    python benchmarks/teacher_cache.py            # afroxlmr-large -> comet (random weights), 300 tweets, 3 epochs, batch 8
    python benchmarks/teacher_cache.py --quick    # demo-teacher -> demo-student, 160 tweets, 2 epochs, batch 16
    python benchmarks/teacher_cache.py --vocab 31888   # the student's vocabulary trimmed, as `--teacher NAME` runs do
    python benchmarks/teacher_cache.py --json out.json --device cuda --batch 32
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import busy_before, machine, now, random_model, table, timing_fields, with_allocator_env, write_json  # noqa: E402,E501

DATA = Path(__file__).resolve().parents[2] / "shared/data/afrisenti"


def short_tweets(data_dir: Path | None, n: int, max_length: int, vocab: int):
    """`n` real training tweets of at most `max_length` tokens, the five languages in turn, and the tokenizer."""
    from afrocomet.data.afrisenti import load_afrisenti
    from afrocomet.data.batching import encode
    from afrocomet.data.schema import DEFAULT_LANGUAGES
    from afrocomet.tokenizer import train_tokenizer

    datasets = load_afrisenti(list(DEFAULT_LANGUAGES), data_dir, splits=("train",), download=False)
    per_lang = [list(zip(ds.texts("train"), ds.label_ids("train"))) for ds in datasets.values()]
    tok = train_tokenizer([t for rows in per_lang for t, _ in rows[:2000]], vocab_size=vocab)
    chosen: list[tuple[str, int]] = []
    iters = [iter(rows) for rows in per_lang]
    while len(chosen) < n:
        for it in iters:
            text, label = next(it)
            if len(tok(text)["input_ids"]) <= max_length and len(chosen) < n:
                chosen.append((text, label))
    data = encode(tok, [t for t, _ in chosen], max_length, labels=[y for _, y in chosen])
    return tok, data


def train(cfg, student_init, teacher, data, tok, device, out: Path):
    from afrocomet.distill.trainer import train_stage

    student = student_init()
    result = train_stage(cfg, student, data, tokenizer=tok, teacher=teacher, out_dir=out, device=device, seed=0,
                         progress=False)
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return result, {r["step"]: r for r in steps if "total" in r}


def main() -> None:
    with_allocator_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="demo presets, 160 tweets, 2 epochs, batch 16")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument("--teacher", default=None, help="preset (default afroxlmr-large; demo-teacher with --quick)")
    parser.add_argument("--student", default=None, help="preset (default comet; demo-student with --quick)")
    parser.add_argument("--examples", type=int, default=None, help="tweets (default 300; 160 with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (2 with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="default 8 (16 with --quick)")
    parser.add_argument("--max-length", type=int, default=48, help="longest tweet kept, in tokens")
    parser.add_argument("--data-dir", type=Path, default=DATA if DATA.is_dir() else None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vocab", type=int, default=None,
                        help="vocabulary rows of both models (default: the presets'; 31888 = comet trimmed to the "
                             "five languages, as `afrocomet run --teacher NAME` does by default)")
    args = parser.parse_args()
    from afrocomet.config import StageConfig
    from afrocomet.distill.cache import cache_key, cached_layers, open_or_build

    device = torch.device(args.device)
    teacher_name = args.teacher or ("demo-teacher" if args.quick else "afroxlmr-large")
    student_name = args.student or ("demo-student" if args.quick else "comet")
    n, epochs = args.examples or (160 if args.quick else 300), args.epochs or (2 if args.quick else 3)
    batch = args.batch or (16 if args.quick else 8)
    started, t0, load_before = now(), time.perf_counter(), machine().get("load_average")
    tok, data = short_tweets(args.data_dir, n, args.max_length, vocab=2000)
    teacher = random_model(teacher_name, "classification", vocab_size=args.vocab, seed=0)
    teacher = teacher.to(device).eval().requires_grad_(False)
    first = random_model(student_name, "classification", vocab_size=args.vocab, seed=1)
    student_init = lambda: copy.deepcopy(first)  # noqa: E731  the same start for both runs
    cfg = dict(name="stage2", kind="distill-task", epochs=epochs, batch_size=batch, lr=1e-4, warmup_ratio=0.0,
               patience=0, progress_every=10**6, temperature=2.0, matching="mean")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AFROCOMET_CACHE"] = str(Path(tmp) / "cache")
        live, live_log = train(StageConfig(**cfg, teacher_cache=False), student_init, teacher, data, tok, device,
                               Path(tmp) / "live")
        t_key = time.perf_counter()
        cache_key(teacher, data, tok, [])
        key_s = time.perf_counter() - t_key
        t_build = time.perf_counter()
        layers = cached_layers(StageConfig(**cfg), first.config, teacher.config)
        open_or_build(teacher, data, tok, layers, device=device, batch_size=max(64, batch))
        build_s = time.perf_counter() - t_build
        cache_bytes = sum(p.stat().st_size for p in (Path(tmp) / "cache").rglob("*.safetensors"))
        cached, cached_log = train(StageConfig(**cfg, teacher_cache=True), student_init, teacher, data, tok, device,
                                   Path(tmp) / "cached")
    live_epoch, cached_epoch = live.seconds / live.epochs, cached.seconds / cached.epochs
    stage_ratio = live.seconds / (build_s + cached.seconds)
    diffs = {term: max(abs(live_log[s][term] - cached_log[s][term]) for s in live_log)
             for term in ("kd", "attention", "hard", "total")}
    rows = [{"run": "without cache", "s_per_epoch": live_epoch, "build_s": 0.0, "stage_s": live.seconds},
            {"run": "with cache", "s_per_epoch": cached_epoch, "build_s": build_s, "stage_s": build_s + cached.seconds}]
    load_after = machine().get("load_average")
    print(f"{teacher_name} -> {student_name} (vocabulary {first.config.vocab_size:,}), {n} tweets "
          f"(<= {args.max_length} tokens), {epochs} epochs, batch {batch}, "
          f"{live.steps} steps, device {args.device}, {torch.get_num_threads()} threads; "
          f"load average before {load_before}, after {load_after}")
    print(table(rows, ["run", "s_per_epoch", "build_s", "stage_s"]))
    print(f"cache: {cache_bytes / 1e6:.2f} MB for {n} tweets, layers {layers}; key hashing {key_s:.2f}s of the build")
    print(f"per epoch {live_epoch / cached_epoch:.2f}x faster; stage (build included) {stage_ratio:.2f}x "
          f"({'meets' if stage_ratio >= 2 else 'misses'} the >= 2x goal)")
    print("max |loss difference| per step: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    busy = busy_before(load_before, "timings are noisy")
    result = {"benchmark": "teacher_cache", "created": started, "teacher": teacher_name, "student": student_name,
              "vocab_size": first.config.vocab_size, "examples": n, "epochs": epochs, "batch": batch, "steps": live.steps, "device": args.device,
              "seconds_per_epoch_live": live_epoch, "seconds_per_epoch_cached": cached_epoch, "build_seconds": build_s,
              "key_seconds": key_s, "cache_bytes": cache_bytes, "stage_seconds_live": live.seconds,
              "stage_seconds_cached": build_s + cached.seconds, "per_epoch_ratio": live_epoch / cached_epoch,
              "stage_ratio": stage_ratio, "max_loss_diff": diffs, **timing_fields(load_before, load_after, busy, t0)}
    if args.json_path:
        write_json(args.json_path, result)
        print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
