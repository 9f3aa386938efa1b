"""Vocabulary trimming of the `comet` student: parameters, disk bytes and CPU latency, untrimmed vs
trimmed to the five AfriSenti languages' training text, measured side by side in one run.

Without the Hub there is no real 250,002-piece XLM-R tokenizer here, so one is stood in for: a
Unigram tokenizer trained on the five languages' train tweets (`--vocab-size` pieces), padded with
filler pieces that never match text to XLM-R's 250,002 ids (`afrocomet.models.vocab.pad_unigram_vocab`).
Real text tokenizes exactly as with the trained tokenizer, so the rows kept are at most
`--vocab-size`; the real AfroXLMR tokenizer splits the same text into other (probably more
distinct) pieces. The student is the `comet` preset with random weights as a sequence classifier,
saved as a Hugging Face folder and trimmed through `afrocomet.models.vocab.trim_folder` (what
`afrocomet trim-vocab` runs). Latency: batch 1 on real test tweets, the two models alternating
(ABBA) chunk by chunk, timed with `afrocomet.bench.measure_latency`.

With `--run DIR` (a finished `afrocomet run`), the run's student is also trimmed post hoc on its
languages' training text, and both folders are scored on test with `afrocomet.predict.evaluate_model`.

    python benchmarks/vocab_trim.py --data-dir ../shared/data/afrisenti            # 32k pieces, 300 tweets
    python benchmarks/vocab_trim.py --quick --data-dir ../shared/data/afrisenti    # 8k pieces on 5k tweets
    python benchmarks/vocab_trim.py --quick --data-dir ../shared/data/afrisenti --run runs/quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, now, random_model, table, write_json  # noqa: E402

from afrocomet.bench import (  # noqa: E402
    measure_latency,
    measure_throughput,
    model_size,
    torch_predictor,
    weights_bytes,
)
from afrocomet.data.afrisenti import load_afrisenti  # noqa: E402
from afrocomet.data.schema import DEFAULT_LANGUAGES  # noqa: E402
from afrocomet.models.vocab import afrisenti_texts, pad_unigram_vocab, trim_folder  # noqa: E402
from afrocomet.predict import evaluate_model, load_classifier  # noqa: E402
from afrocomet.tokenizer import train_tokenizer  # noqa: E402

XLMR_VOCAB = 250_002


def build_folders(work: Path, train: list[str], vocab_size: int, sample: int | None, seed: int) -> dict:
    """The untrimmed comet folder (250,002-piece tokenizer) and its trimmed copy; the trim report."""
    rng = np.random.default_rng(seed)
    tok_texts = train if sample is None or sample >= len(train) else [train[i] for i in sorted(
        rng.choice(len(train), sample, replace=False))]
    t0 = time.perf_counter()
    tokenizer = pad_unigram_vocab(train_tokenizer(tok_texts, vocab_size=vocab_size), XLMR_VOCAB)
    print(f"tokenizer: {vocab_size:,} pieces trained on {len(tok_texts):,} tweets, padded to {len(tokenizer):,} "
          f"({time.perf_counter() - t0:.0f}s)")
    model = random_model("comet", "classification", vocab_size=len(tokenizer), seed=seed)
    model.save_pretrained(work / "full")
    tokenizer.save_pretrained(work / "full")
    t0 = time.perf_counter()
    report = trim_folder(work / "full", work / "trimmed", train)
    print(f"trimmed in {time.perf_counter() - t0:.0f}s: {report.summary()}")
    return report.to_dict()


def side_by_side(work: Path, texts: list[str], threads: int, rounds: int = 4) -> dict:
    """Parameters, disk bytes, latency (batch 1) and throughput of the two folders, in this process.

    Latency is timed in `rounds` chunks of the texts, alternating which model goes first (ABBA), so
    that a change of machine load during the run hits both; p50/p95 are the medians over chunks.
    """
    torch.set_num_threads(threads)
    folders = {"untrimmed": "full", "trimmed": "trimmed"}
    models = {name: load_classifier(work / folder)[:2] for name, folder in folders.items()}
    predict = {name: torch_predictor(model, tok, 128) for name, (model, tok) in models.items()}
    chunks = [texts[i::rounds] for i in range(rounds)]
    timed: dict[str, list[dict]] = {name: [] for name in models}
    for i, chunk in enumerate(chunks):
        for name in (list(models) if i % 2 == 0 else list(models)[::-1]):
            timed[name].append(measure_latency(predict[name], chunk, batch_size=1, warmup=3))
    rows = {}
    for name, (model, _) in models.items():
        size = model_size(work / folders[name])
        rows[name] = {"model": name, "vocab": model.config.vocab_size, "parameters": size["parameters"],
                      "disk_MB": size["disk_bytes"] / 1e6, "weights_MB": weights_bytes(model) / 1e6,
                      "p50_ms": float(np.median([t["p50_ms"] for t in timed[name]])),
                      "p95_ms": float(np.median([t["p95_ms"] for t in timed[name]])),
                      "texts_per_s": measure_throughput(predict[name], texts, batch_size=32)["texts_per_s"]}
    u, t = rows["untrimmed"], rows["trimmed"]
    ratios = {k: u[k] / t[k] for k in ("parameters", "disk_MB", "weights_MB", "p50_ms", "p95_ms")}
    ratios["texts_per_s"] = t["texts_per_s"] / u["texts_per_s"]
    return {"rows": rows, "ratios": ratios, "threads": torch.get_num_threads(), "n_texts": len(texts)}


def run_before_after(run_dir: Path, data_dir: str | None, work: Path, min_count: int = 1) -> dict:
    """A finished run's student, trimmed post hoc on its languages' train text (pieces seen at
    least `min_count` times): test weighted F1 before and after."""
    config = json.loads((run_dir / "results.json").read_text())["config"]
    languages = config["data"]["languages"]
    data_dir = data_dir or config["data"]["data_dir"]
    texts = afrisenti_texts(languages, data_dir, config["data"]["extra_text"])
    report = trim_folder(run_dir / "student", work / "run-student-trimmed", texts, min_count=min_count)
    scores = {}
    for name, folder in (("before", run_dir / "student"), ("after", work / "run-student-trimmed")):
        result = evaluate_model(folder, languages=languages, data_dir=data_dir, device="cpu")
        scores[name] = {"weighted_f1": result["average"]["weighted_f1"],
                        "per_language": {k: v["weighted_f1"] for k, v in result["languages"].items()}}
    return {"run": str(run_dir), "languages": languages, "min_count": min_count, "trim": report.to_dict(), **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8k pieces trained on 5k tweets, 100 latency tweets")
    parser.add_argument("--data-dir", default=None, help="AfriSenti folder (default: $AFROCOMET_DATA, the cache)")
    parser.add_argument("--vocab-size", type=int, default=None, help="trained tokenizer's pieces (32000; quick 8000)")
    parser.add_argument("--texts", type=int, default=None, help="test tweets timed at batch 1 (300; 100 quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--run", type=Path, default=None, help="a finished `afrocomet run` folder: F1 before/after")
    parser.add_argument("--min-count", type=int, default=1, help="with --run: keep pieces seen at least this often")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vocab_size = args.vocab_size or (8000 if args.quick else 32000)
    n_texts = args.texts or (100 if args.quick else 300)
    started, load_before = now(), machine().get("load_average")

    languages = list(DEFAULT_LANGUAGES)
    train = afrisenti_texts(languages, args.data_dir)
    test = [t for ds in load_afrisenti(languages, args.data_dir, splits=("test",)).values() for t in ds.texts("test")]
    test = [test[i] for i in np.random.default_rng(args.seed).permutation(len(test))[:n_texts]]
    result: dict = {"created": started, "vocab_size": vocab_size, "load_average_before": load_before}
    with tempfile.TemporaryDirectory(prefix="vocab-trim-") as tmp:
        work = Path(tmp)
        result["trim"] = build_folders(work, train, vocab_size, 5000 if args.quick else None, args.seed)
        result.update(side_by_side(work, test, args.threads or torch.get_num_threads()))
        if args.run is not None:
            result["run"] = run_before_after(args.run, args.data_dir, work, args.min_count)
    result["machine"] = machine()

    print(f"\ncomet classifier, {vocab_size:,}-piece tokenizer padded to {XLMR_VOCAB:,}; CPU, "
          f"{result['threads']} threads, batch 1 on {result['n_texts']} AfriSenti test tweets "
          f"(load {load_before} before)")
    print(table(list(result["rows"].values()),
                ["model", "vocab", "parameters", "disk_MB", "weights_MB", "p50_ms", "p95_ms", "texts_per_s"]))
    print("untrimmed / trimmed: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["ratios"].items()))
    print(f"vs the teacher (559,890,432): trimmed student has "
          f"{100 * (1 - result['rows']['trimmed']['parameters'] / 559_890_432):.2f}% fewer parameters")
    if "run" in result:
        r = result["run"]
        print(f"\n{r['run']}/student trimmed post hoc (min count {r['min_count']}): {r['trim']['rows_kept']:,} of "
              f"{r['trim']['rows_total']:,} rows; "
              f"test weighted F1 (average over {', '.join(r['languages'])}) "
              f"{100 * r['before']['weighted_f1']:.2f} -> {100 * r['after']['weighted_f1']:.2f}")
    if args.json_path:
        write_json(args.json_path, result)
        print(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
