"""The run's inputs: the labelled datasets, the tokenizer (saved for resuming), and the encoded
splits every stage reads (RunData)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from afrocomet.config import RunConfig
from afrocomet.data.batching import Encoded, encode
from afrocomet.data.corpus import read_extra_text
from afrocomet.data.schema import Dataset
from afrocomet.errors import AfroCometError


@dataclass
class RunData:
    datasets: dict[str, Dataset]
    tokenizer: object
    train: Encoded  # all languages, groups = language
    dev: dict[str, Encoded]
    test: dict[str, Encoded]
    unlabelled: Encoded  # stage-1 text (train tweets + extra text files)
    labels: tuple[str, ...] = ()
    truncated: dict[str, int] = field(default_factory=dict)

    def only(self, lang: str) -> "RunData":
        """The same data restricted to one language (stage-1 text keeps the user's extra text)."""
        def keep(data: Encoded, groups: tuple[str, ...]) -> Encoded:
            return data.subset([i for i, g in enumerate(data.groups) if g in groups])

        return replace(self, datasets={lang: self.datasets[lang]}, train=keep(self.train, (lang,)),
                       dev={lang: self.dev[lang]}, test={lang: self.test[lang]},
                       unlabelled=keep(self.unlabelled, (lang, "extra")),
                       truncated={lang: self.truncated[lang]})


def load_datasets(config: RunConfig) -> dict[str, Dataset]:
    from afrocomet.data.afrisenti import load_afrisenti, load_custom

    d = config.data
    if d.train is not None:
        name = d.languages[0] if len(d.languages) == 1 else "custom"
        return {name: load_custom(train=d.train, dev=d.dev, test=d.test, name=name)}
    return load_afrisenti(d.languages, d.data_dir, download=d.download)


def sample_datasets(config: RunConfig, datasets: dict[str, Dataset]) -> tuple[dict[str, Dataset], dict]:
    """`data.train_rows` / `data.dev_rows`: at most that many rows per language (afrocomet.data.sample),
    and {language: {split: [rows kept, rows there]}} for the splits that were cut (results.json `rows`)."""
    from afrocomet.data.sample import sample_rows

    caps = {"train": config.data.train_rows, "dev": config.data.dev_rows}
    out, cut = {}, {}
    for lang, ds in datasets.items():
        for split, n in caps.items():
            before = len(ds.splits.get(split) or [])
            ds = sample_rows(ds, split, n, config.seed)
            if len(ds.splits.get(split) or []) < before:
                cut.setdefault(lang, {})[split] = [len(ds.splits[split]), before]
        out[lang] = ds
    return out, cut


def check_training_labels(config: RunConfig, datasets: dict[str, Dataset]) -> None:
    """Before any training: every language's training split (as sampled) holds rows of at least two
    labels, which the classifiers and the TF-IDF baseline need (one label is nothing to learn)."""
    for lang, ds in datasets.items():
        found = sorted({ex.label for ex in ds.splits.get("train") or []})
        if len(found) >= 2:
            continue
        rows = len(ds.splits.get("train") or [])
        cut = config.data.train_rows
        why = (f"data.train_rows {cut} keeps {rows} row(s) of it" if cut is not None else f"it has {rows} row(s)")
        hint = (f"use --train-rows {len(ds.labels)} or more" if cut is not None else
                "add rows of the other labels")
        raise AfroCometError(f"{lang}: the training split holds only the label(s) {', '.join(found) or 'none'} "
                             f"({why}); a classifier needs rows of at least two labels: {hint}")


def prepare_data(config: RunConfig, datasets: dict[str, Dataset], tokenizer) -> RunData:
    n = config.data.max_length
    labels = next(iter(datasets.values())).labels
    train, dev, test, truncated = [], {}, {}, {}
    for lang, ds in datasets.items():
        train.append(encode(tokenizer, ds.texts("train"), n, labels=ds.label_ids("train"), group=lang))
        dev[lang] = encode(tokenizer, ds.texts("dev"), n, labels=ds.label_ids("dev"), group=lang)
        test[lang] = encode(tokenizer, ds.texts("test"), n, labels=ds.label_ids("test"), group=lang)
        truncated[lang] = test[lang].truncated
    all_train = Encoded.concat(train)
    extra = read_extra_text(config.data.extra_text)
    unlabelled = Encoded(ids=list(all_train.ids), groups=list(all_train.groups))
    if extra:
        more = encode(tokenizer, extra, n, group="extra")
        unlabelled = Encoded.concat([unlabelled, more])
    return RunData(datasets, tokenizer, all_train, dev, test, unlabelled, labels, truncated)


def make_tokenizer(ctx_config: RunConfig, datasets: dict[str, Dataset]):
    """The teacher's own tokenizer, or (for preset teachers) one trained on the training split only."""
    from afrocomet.tokenizer import tokenizer_for

    texts = [t for ds in datasets.values() for t in ds.texts("train")]
    sample = ctx_config.model.tokenizer_sample
    if sample is not None and sample < len(texts):
        keep = np.random.default_rng(ctx_config.seed).choice(len(texts), sample, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    return tokenizer_for(ctx_config.model, texts)


COVERAGE = "tokenizer_coverage.json"  # in the state folder, beside the tokenizer: what resuming reports


def prepare_tokenizer(config: RunConfig, datasets: dict[str, Dataset], state: Path) -> tuple[object, dict]:
    """The run's tokenizer (with `data.normalize` in its normalizer), saved in the working folder so
    that a resumed run uses the very same one; and its coverage of each language's training text
    (`<unk>` rates, before and after the normalisation: afrocomet.normalize.coverage)."""
    import json

    from afrocomet.io import atomic_write_json
    from afrocomet.normalize import coverage
    from afrocomet.tokenizer import load_tokenizer, save_tokenizer

    from afrocomet.distill.parallel import processes

    folder = state / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        saved = state / COVERAGE
        return load_tokenizer(folder), (json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {})
    tokenizer = make_tokenizer(config, datasets)  # deterministic: every process trains the same one
    train = {lang: ds.texts("train") for lang, ds in datasets.items()}
    tokenizer, report = coverage(tokenizer, train, config.data.normalize)
    if processes().is_main:
        save_tokenizer(tokenizer, folder)
        atomic_write_json(state / COVERAGE, report)
    return tokenizer, report
