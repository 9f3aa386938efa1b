"""A smaller run on a small machine: at most N rows of a split per language, a seeded random sample
stratified by label (scikit-learn's stratified split), the rows kept in file order."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from afrocomet.data.schema import Dataset


def sample_rows(ds: Dataset, split: str, n: int | None, seed: int) -> Dataset:
    """`ds` with at most `n` rows of `split` (None, or no more rows than `n`: unchanged). Each label
    keeps about its share of the rows; where a label has a single row the sample is not stratified."""
    rows = ds.splits.get(split)
    if n is None or rows is None or len(rows) <= n:
        return ds
    from sklearn.model_selection import train_test_split

    labels = [ex.label for ex in rows]
    counts = Counter(labels)
    enough = min(counts.values()) >= 2 and min(n, len(rows) - n) >= len(counts)  # what a stratified split needs
    stratify = labels if enough else None
    keep, _ = train_test_split(list(range(len(rows))), train_size=n, random_state=seed, stratify=stratify)
    return replace(ds, splits={**ds.splits, split: [rows[i] for i in sorted(keep)]})
