"""data.train_rows / data.dev_rows: a seeded sample of each language's split, stratified by label."""

from __future__ import annotations

from collections import Counter

import pytest

from afrocomet.data.sample import sample_rows
from afrocomet.data.schema import Dataset, Example


def _dataset(labels: list[str]) -> Dataset:
    rows = [Example(f"text {i}", label, None, "train.tsv", i + 2) for i, label in enumerate(labels)]
    test = [Example("t", "neutral", None, "test.tsv", 2)]
    return Dataset("xx", {"train": rows, "dev": list(rows), "test": test})


def test_sample_keeps_label_shares_file_order_and_is_seeded():
    ds = _dataset(["negative"] * 600 + ["neutral"] * 300 + ["positive"] * 100)
    out = sample_rows(ds, "train", 100, seed=7)
    kept = out.splits["train"]
    assert Counter(ex.label for ex in kept) == {"negative": 60, "neutral": 30, "positive": 10}
    assert [ex.line for ex in kept] == sorted(ex.line for ex in kept)  # file order
    assert out.splits["dev"] is ds.splits["dev"] and out.splits["test"] is ds.splits["test"]  # only that split
    assert out.splits["train"] == sample_rows(ds, "train", 100, seed=7).splits["train"]
    assert out.splits["train"] != sample_rows(ds, "train", 100, seed=8).splits["train"]
    assert len(ds.splits["train"]) == 1000  # the input is not changed


@pytest.mark.parametrize("n", [None, 1000, 5000])
def test_no_cut_when_the_split_is_not_larger(n):
    ds = _dataset(["negative", "positive"] * 500)
    assert sample_rows(ds, "train", n, seed=0) is ds


def test_a_label_with_one_row_falls_back_to_a_plain_sample():
    ds = _dataset(["negative"] * 50 + ["neutral"] * 49 + ["positive"])
    kept = sample_rows(ds, "train", 10, seed=0).splits["train"]
    assert len(kept) == 10 and len({ex.line for ex in kept}) == 10


def test_sample_datasets_reports_what_was_cut():
    from afrocomet.run.budgets import default_config
    from afrocomet.run.inputs import sample_datasets

    config = default_config()
    config.data.train_rows, config.data.dev_rows = 100, 2000
    big, small = _dataset(["negative", "positive"] * 500), _dataset(["negative", "positive"] * 30)
    out, cut = sample_datasets(config, {"big": big, "small": small})
    assert cut == {"big": {"train": [100, 1000]}}  # dev (1,000 rows) and the small language are whole
    assert len(out["big"].splits["train"]) == 100 and out["small"] is small


@pytest.mark.parametrize("flag", ["--train-rows", "--dev-rows"])
def test_rows_must_be_positive(tmp_path, capsys, flag):
    from afrocomet.cli import main

    code = main(["run", "--quick", flag, "0", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("afrocomet: error:") and flag in err[0]
    assert not (tmp_path / "r").exists()


def test_rows_in_a_config_file_are_checked(tmp_path, capsys):
    from afrocomet.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text("data:\n  dev_rows: -5\n")
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cfg) in err[0] and "data.dev_rows" in err[0], err
