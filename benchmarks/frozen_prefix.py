"""Teacher fine-tuning with the embeddings and lowest layers frozen: the frozen layers run every step
(live) vs read once from the frozen-prefix cache (distill/frozen_prefix.py), side by side.

Both runs fine-tune the same imported multilingual-e5-small (vocabulary trimmed to the tweets, as
`afrocomet run --teacher` does) from the same weights on the same real Hausa training tweets,
through `train_stage` (a `teacher-finetune` stage: gold labels, the run's lr 8e-5 and batch 32),
once with `--no-frozen-cache` and once reading the cache built just before (its build timed
apart: hashing the frozen weights and token ids, and one eval-mode pass of the frozen layers).
Printed: seconds per epoch of each, the build, the ratios (per epoch; and for one and two epochs
with the build counted), the cache's size on disk, and the largest difference of the logits
(eval mode, the initial weights) between the two paths on every training tweet.

    afrocomet import-e5 --out ~/e5                                        # once (about 10 s)
    python benchmarks/frozen_prefix.py --teacher ~/e5                     # 1,000 hau tweets, lowest 6 of 12 layers frozen
    python benchmarks/frozen_prefix.py --teacher ~/e5 --frozen 9 --examples 500 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import busy_before, machine, now, table, timing_fields, with_allocator_env, write_json  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/afrisenti"


def hausa_tweets(data_dir: Path | None, n: int, lang: str = "hau"):
    """`n` training tweets of `lang` taken at an even stride (the files are sorted by label) and their labels."""
    from afrocomet.data.afrisenti import load_afrisenti

    ds = load_afrisenti([lang], data_dir, splits=("train",), download=False)[lang]
    texts, labels = ds.texts("train"), ds.label_ids("train")
    stride = max(1, len(texts) // n)
    return list(texts[::stride][:n]), list(labels[::stride][:n]), ds.labels


def teacher_and_data(folder: Path, texts, labels, names, frozen: int, max_length: int):
    """The e5 classifier (vocabulary trimmed to `texts`, embeddings and lowest `frozen` layers frozen), the
    encoded tweets and the tokenizer."""
    from afrocomet.data.batching import encode
    from afrocomet.models.build import load_pretrained
    from afrocomet.models.vocab import trim_together
    from afrocomet.run.teacher import freeze_teacher
    from afrocomet.tokenizer import load_tokenizer

    torch.manual_seed(0)  # the new classification head (and pooler)
    id2label = dict(enumerate(names))
    model = load_pretrained(str(folder), "classification", num_labels=len(names), id2label=id2label)
    tok, _, _ = trim_together({"teacher": model}, load_tokenizer(str(folder)), texts)
    frozen_info = freeze_teacher(model, True, frozen)
    return model, encode(tok, texts, max_length, labels=labels), tok, frozen_info


def logit_difference(model, data, tok, cache, batch_size: int = 64) -> float:
    """Largest |cached - live| logit over every example (eval mode), in batches of the data order."""
    from afrocomet.data.batching import collate

    model.eval()
    worst = 0.0
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            index = list(range(start, min(start + batch_size, len(data))))
            batch = {**collate(data, index, tok.pad_token_id), "index": torch.tensor(index)}
            live = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            with cache.feeding(model, batch):
                cached = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            worst = max(worst, float((cached - live).abs().max()))
    return worst


def main() -> None:
    with_allocator_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the imported e5 folder (afrocomet import-e5)")
    parser.add_argument("--examples", type=int, default=1000, help="Hausa training tweets (default 1000)")
    parser.add_argument("--frozen", type=int, default=6, help="lowest layers frozen with the embeddings (default 6)")
    parser.add_argument("--epochs", type=float, default=1.0, help="of each timed run (default 1)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64, help="tokens a tweet, as the run cuts them")
    parser.add_argument("--data-dir", type=Path, default=DATA if DATA.is_dir() else None)
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    args = parser.parse_args()
    from afrocomet.config import StageConfig
    from afrocomet.distill.frozen_prefix import open_or_build
    from afrocomet.distill.trainer import train_stage

    started, t0, load_before = now(), time.perf_counter(), machine().get("load_average")
    texts, labels, names = hausa_tweets(args.data_dir, args.examples)
    first, data, tok, frozen = teacher_and_data(args.teacher, texts, labels, names, args.frozen, args.max_length)
    cfg = dict(name="teacher-finetune", kind="teacher-finetune", epochs=args.epochs, batch_size=args.batch, lr=8e-5,
               patience=0, progress_every=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AFROCOMET_CACHE"] = str(Path(tmp) / "cache")
        live = train_stage(StageConfig(**cfg, frozen_cache=False), copy.deepcopy(first), data, tokenizer=tok, seed=0,
                           progress=False)
        t_build = time.perf_counter()
        cache = open_or_build(first, data, tok.pad_token_id, frozen["layers"], device="cpu",
                              batch_size=max(64, args.batch))
        build_s = time.perf_counter() - t_build
        cache_bytes = cache.path.stat().st_size
        cached = train_stage(StageConfig(**cfg), copy.deepcopy(first), data, tokenizer=tok, seed=0, progress=False)
        assert cached.frozen_cache is not None and cached.frozen_cache["path"] == str(cache.path)
        logit_diff = logit_difference(first, data, tok, cache)
    load_after = machine().get("load_average")
    live_epoch, cached_epoch = live.seconds / live.epochs, cached.seconds / cached.epochs
    ratio, one, two = live_epoch / cached_epoch, live_epoch / (build_s + cached_epoch), \
        2 * live_epoch / (build_s + 2 * cached_epoch)
    rows = [{"run": "live (--no-frozen-cache)", "steps": live.steps, "s_per_step": live.seconds / live.steps,
             "s_per_epoch": live_epoch, "build_s": 0.0, "first_loss": live.terms["hard"]["first"],
             "last_loss": live.terms["hard"]["last"]},
            {"run": "frozen-prefix cache", "steps": cached.steps, "s_per_step": cached.seconds / cached.steps,
             "s_per_epoch": cached_epoch, "build_s": build_s, "first_loss": cached.terms["hard"]["first"],
             "last_loss": cached.terms["hard"]["last"]}]
    lengths = [len(ids) for ids in data.ids]
    print(f"e5 ({first.config.num_hidden_layers} layers x {first.config.hidden_size}, vocabulary trimmed to "
          f"{first.config.vocab_size:,}), embeddings + lowest {frozen['layers']} layers frozen "
          f"({frozen['trainable_parameters']:,} of {frozen['parameters']:,} parameters trained); {len(data)} hau "
          f"tweets ({sum(lengths) / len(lengths):.1f} tokens on average, <= {args.max_length}), batch {args.batch}, "
          f"{args.epochs:g} epoch(s), {torch.get_num_threads()} threads; load average before {load_before}, "
          f"after {load_after}")
    print(table(rows, ["run", "steps", "s_per_step", "s_per_epoch", "build_s", "first_loss", "last_loss"]))
    print(f"cache: {cache_bytes / 1e6:.1f} MB ({cache.dtype}) for {len(data)} tweets; max |logit difference| "
          f"cached vs live (eval mode) {logit_diff:.2e}")
    print(f"per epoch {ratio:.2f}x faster; with the build: 1 epoch {one:.2f}x, 2 epochs (the run's default) {two:.2f}x")
    busy = busy_before(load_before, "timings are noisy")
    result = {"benchmark": "frozen_prefix", "created": started, "examples": len(data), "frozen_layers": frozen["layers"],
              "layers": first.config.num_hidden_layers, "vocab_size": first.config.vocab_size, "batch": args.batch,
              "epochs": args.epochs, "steps": live.steps, "mean_tokens": sum(lengths) / len(lengths),
              "seconds_per_epoch_live": live_epoch, "seconds_per_epoch_cached": cached_epoch, "build_seconds": build_s,
              "cache_bytes": cache_bytes, "cache_dtype": cache.dtype, "per_epoch_ratio": ratio,
              "ratio_one_epoch_with_build": one, "ratio_two_epochs_with_build": two, "max_logit_diff": logit_diff,
              "loss": {r["run"]: [r["first_loss"], r["last_loss"]] for r in rows},
              **timing_fields(load_before, load_after, busy, t0)}
    if args.json_path:
        write_json(args.json_path, result)
        print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
