"""Parse AfriSenti (and the user's own) TSV files into `Example`s, strictly.

A file is UTF-8, tab-separated, with no quoting (tweets contain quotes), and a header naming a
text column (`tweet` or `text`), a `label` column and optionally an `ID` column. Every problem is
an AfroCometError naming the file and the 1-based line (the header is line 1); no row is dropped.
"""

from __future__ import annotations

import csv
import errno
import logging
import os
import random
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from afrocomet.data.download import check_languages, resolve_data_dir
from afrocomet.data.schema import DEFAULT_LANGUAGES, LABELS, SPLITS, Dataset, Example
from afrocomet.errors import AfroCometError

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("tweet", "text")
DEV_FRACTION = 0.1
DEV_SEED = 13


def _missing_file_error(path: Path) -> AfroCometError:
    if path.is_symlink():  # it is there, but leads nowhere: say so rather than "not found"
        try:
            path.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return AfroCometError("is a symbolic link that loops (it points back to itself through "
                                      f"{os.readlink(path)}); point it at the real file", path=path)
        return AfroCometError(f"is a broken symbolic link: its target {os.readlink(path)} does not exist", path=path)
    folder = path.parent
    if not folder.is_dir():
        return AfroCometError(f"file not found (folder {folder} does not exist)", path=path)
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    listing = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    return AfroCometError(f"file not found; {folder} holds: {listing or 'nothing'}", path=path)


def _read_utf8(path: Path) -> str:
    """The file's text; a bad byte is reported with its line and byte offset. A BOM is removed."""
    if not path.exists():
        raise _missing_file_error(path)
    if path.is_dir():
        raise AfroCometError("is a folder, expected a .tsv file", path=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AfroCometError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise AfroCometError(
            f"not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
            f"(byte {column} of the line); save the file as UTF-8",
            path=path,
            line=line,
        ) from None
    return text.removeprefix("\ufeff")


def _split_lines(text: str, path: Path) -> list[str]:
    """Lines without their `\\n` / `\\r\\n`; blank lines at the very end are dropped, others are errors."""
    lines = text.split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise AfroCometError("file is empty (expected a header line such as 'tweet<TAB>label')", path=path)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise AfroCometError("blank line (only the end of the file may have blank lines)", path=path, line=number)
    return lines


def _header_columns(header: list[str], path: Path, require_label: bool) -> tuple[int, int | None, int | None]:
    """Indices of the text, label and ID columns in the header."""
    names = [name.strip().lower() for name in header]
    shown = ", ".join(repr(name) for name in header)
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise AfroCometError(f"header repeats column(s) {', '.join(dupes)}; it has {shown}", path=path, line=1)
    found = [name for name in TEXT_COLUMNS if name in names]
    if len(found) != 1:
        problem = "has both 'tweet' and 'text'" if found else "has no text column ('tweet' or 'text')"
        raise AfroCometError(f"header {problem}; its columns are {shown}", path=path, line=1)
    label_col = names.index("label") if "label" in names else None
    if label_col is None and require_label:
        raise AfroCometError(f"header has no 'label' column; its columns are {shown}", path=path, line=1)
    id_col = names.index("id") if "id" in names else None
    return names.index(found[0]), label_col, id_col


def _rows(lines: Iterable[str], path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for each line, via the csv module: tab delimiter, no quoting. `lines` may
    be a list or a stream (`predict` reads any size): the line a complaint is about is the last one
    the reader took, so an error message never needs to index `lines`."""
    last = [""]

    def fed() -> Iterator[str]:
        for line in lines:
            last[0] = line
            yield line

    reader = csv.reader(fed(), delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    number = 0
    while True:
        number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise AfroCometError(_parse_problem(exc, last[0]), path, number) from None
        yield number, row


def _parse_problem(exc: csv.Error, line: str) -> str:
    """What the csv module's complaint about `line` means for the user."""
    limit = csv.field_size_limit()
    if "field larger than field limit" in str(exc):
        longest = max((len(cell) for cell in line.split("\t")), default=len(line))
        return (f"a cell of {longest} characters on this line is longer than the limit of {limit} "
                "(a file with one example per line should not have one; is it a TSV file with line breaks?)")
    if "\r" in line:
        return f"cannot parse line: {exc} (a carriage return inside the text)"
    return f"cannot parse line: {exc}"


def read_tsv(
    path: str | Path, *, labels: Sequence[str] | None = LABELS, require_label: bool = True
) -> list[Example]:
    """Read one TSV file. `labels=None` accepts any non-empty label (the user's own label set)."""
    path = Path(path)
    rows = _rows(_split_lines(_read_utf8(path), path), path)
    _, header = next(rows)
    columns = _header_columns(header, path, require_label)
    seen_ids: dict[str, int] = {}
    examples = [_parse_row(row, len(header), columns, path, number, labels, seen_ids) for number, row in rows]
    if not examples:
        raise AfroCometError("file has a header but no rows", path=path)
    return examples


def _parse_row(
    row: list[str],
    n_columns: int,
    columns: tuple[int, int | None, int | None],
    path: str | Path,
    number: int,
    labels: Sequence[str] | None,
    seen_ids: dict[str, int],
) -> Example:
    """One data row as an `Example`, checked; `columns` is (text, label, ID) from `_header_columns`.

    `seen_ids` (ID -> line) is updated in place, so the caller can check a file row by row.
    """
    text_col, label_col, id_col = columns
    if len(row) != n_columns:
        hint = " (a tab inside the text?)" if len(row) > n_columns else ""
        raise AfroCometError(f"expected {n_columns} columns, got {len(row)}{hint}", path, number)
    text = row[text_col]
    if not text.strip():
        raise AfroCometError("empty text", path, number)
    label = None if label_col is None else row[label_col].strip()
    if label == "":
        raise AfroCometError("empty label", path, number)
    if label is not None and labels is not None and label not in labels:
        raise AfroCometError(f"unknown label {label!r}; allowed: {', '.join(labels)}", path, number)
    ex_id = None if id_col is None else row[id_col].strip()
    if ex_id is not None:
        if not ex_id:
            raise AfroCometError("empty ID", path, number)
        if ex_id in seen_ids:
            raise AfroCometError(f"duplicate ID {ex_id!r} (first on line {seen_ids[ex_id]})", path, number)
        seen_ids[ex_id] = number
    return Example(text=text, label=label, id=ex_id, source=str(path), line=number)


def _source(dataset: Dataset, split: str) -> str:
    rows = dataset.splits.get(split) or []
    return rows[0].source if rows else f"{dataset.name} {split}"


def check_label_sets(datasets: Dataset | Mapping[str, Dataset] | Iterable[Dataset]) -> None:
    """The labels present in train must be exactly those in test, and dev may only use train's labels."""
    if isinstance(datasets, Dataset):
        datasets = [datasets]
    elif isinstance(datasets, Mapping):
        datasets = list(datasets.values())
    for ds in datasets:
        if "train" not in ds.splits:
            continue
        train = {ex.label for ex in ds.splits["train"]}
        for split in ("test", "dev"):
            if split not in ds.splits:
                continue
            other = {ex.label for ex in ds.splits[split]}
            only_train, only_other = sorted(train - other), sorted(other - train)
            if only_other or (split == "test" and only_train):
                raise AfroCometError(
                    f"label sets differ between {_source(ds, 'train')} and {_source(ds, split)}: "
                    f"only in train: {', '.join(only_train) or '-'}; only in {split}: {', '.join(only_other) or '-'}"
                )


def load_afrisenti(
    languages: str | Iterable[str] = DEFAULT_LANGUAGES,
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    splits: Sequence[str] = SPLITS,
) -> dict[str, Dataset]:
    """Load AfriSenti: language code -> Dataset with the requested splits (see `resolve_data_dir`)."""
    languages = check_languages(languages)
    unknown = [split for split in splits if split not in SPLITS]
    if unknown or not splits:
        raise AfroCometError(f"unknown split(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir, languages=languages, download=download)
    out = {
        lang: Dataset(name=lang, splits={split: read_tsv(root / lang / f"{split}.tsv") for split in splits})
        for lang in languages
    }
    check_label_sets(out)
    return out


def _custom_paths(
    train: str | Path | None, dev: str | Path | None, test: str | Path | None, folder: str | Path | None
) -> dict[str, Path | None]:
    """The files of a custom task: explicit paths, or train/dev/test.tsv in `folder` (dev optional)."""
    if folder is not None:
        if any(p is not None for p in (train, dev, test)):
            raise AfroCometError("give either a folder or train/dev/test files, not both", path=folder)
        folder = Path(folder)
        if not folder.is_dir():
            raise AfroCometError("folder does not exist", path=folder)
        dev_file = folder / "dev.tsv"
        dev_path = dev_file if dev_file.exists() or dev_file.is_symlink() else None
        return {"train": folder / "train.tsv", "dev": dev_path, "test": folder / "test.tsv"}
    if train is None or test is None:
        raise AfroCometError(
            "custom data needs at least a train and a test file (or a folder holding train.tsv and test.tsv)"
        )
    return {"train": Path(train), "dev": None if dev is None else Path(dev), "test": Path(test)}


def _label_order(found: set[str]) -> tuple[str, ...]:
    return LABELS if found == set(LABELS) else tuple(sorted(found))


def _carve_dev(
    train: list[Example], fraction: float = DEV_FRACTION, seed: int = DEV_SEED
) -> tuple[list[Example], list[Example]]:
    """Split off a deterministic `fraction` of train as dev; both parts keep the file order."""
    if len(train) < 2:
        raise AfroCometError("train needs at least 2 rows to set some aside as dev", path=train[0].source)
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    dev_idx = set(order[: max(1, round(fraction * len(train)))])
    rest = [ex for i, ex in enumerate(train) if i not in dev_idx]
    return rest, [ex for i, ex in enumerate(train) if i in dev_idx]


def load_custom(
    train: str | Path | None = None,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    folder: str | Path | None = None,
    name: str = "custom",
) -> Dataset:
    """Load the user's own labelled task. Its labels are those found in train.

    Without a dev file, 10% of train (fixed seed) becomes dev, and a log message says so.
    """
    paths = _custom_paths(train, dev, test, folder)
    splits = {split: read_tsv(path, labels=None) for split, path in paths.items() if path is not None}
    labels = _label_order({ex.label for ex in splits["train"]})  # type: ignore[misc]
    if len(labels) < 2:
        msg = f"train has only one label ({labels[0]!r}); a classifier needs two or more"
        raise AfroCometError(msg, path=paths["train"])
    for split in ("dev", "test"):
        for ex in splits.get(split, []):
            if ex.label not in labels:
                raise AfroCometError(
                    f"label {ex.label!r} does not occur in train ({paths['train']}); train has: {', '.join(labels)}",
                    ex.source,
                    ex.line,
                )
    if "dev" not in splits:
        splits["train"], splits["dev"] = _carve_dev(splits["train"])
        logger.info(
            "%s: no dev file, using %d of %d train rows (%.0f%%, seed %d) as dev",
            name, len(splits["dev"]), len(splits["dev"]) + len(splits["train"]), 100 * DEV_FRACTION, DEV_SEED,
        )
    return Dataset(name=name, splits={split: splits[split] for split in SPLITS}, labels=labels)
