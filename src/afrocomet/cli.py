"""The `afrocomet` command. Thin: parses options, calls the Python API, prints.

Every `AfroCometError` becomes one line on stderr (`afrocomet: error: ...`) and exit code 2.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import click

from afrocomet.errors import AfroCometError


def _console():
    from rich.console import Console

    return Console()


def _print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in ("name", "system", "language", "description") else "right")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    _console().print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="afrocomet")
def cli() -> None:
    """Hybrid knowledge distillation of multilingual models for African languages (AfroXLMR-Comet)."""


# ----------------------------------------------------------------------------- presets


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def presets(as_json: bool) -> None:
    """List the model presets, with parameters counted from built models."""
    from afrocomet.models.build import presets_table

    rows = presets_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table(
        "afrocomet model presets (parameters include the pooler)",
        ["name", "layers", "hidden", "heads", "ffn", "vocab", "parameters"],
        [[r["name"], r["layers"], r["hidden"], r["heads"], r["ffn"], r["vocab"], f"{r['parameters']:,}"] for r in rows],
    )


# ----------------------------------------------------------------------------- data


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AfriSenti folder (<lang>/<split>.tsv). Default: $AFROCOMET_DATA, the cache, then download.")
@click.option("--languages", "-l", multiple=True, help="Languages to load (repeat or comma-separate).")
@click.option("--no-download", is_flag=True, help="Never download; fail if the data is not found.")
@click.option("--json", "as_json", is_flag=True, help="Print counts as JSON.")
def data(data_dir: Path | None, languages: tuple[str, ...], no_download: bool, as_json: bool) -> None:
    """Find (or download and verify) AfriSenti, parse it strictly and print the counts."""
    from afrocomet.data.afrisenti import load_afrisenti
    from afrocomet.data.schema import DEFAULT_LANGUAGES

    langs = _split_languages(languages) or list(DEFAULT_LANGUAGES)
    datasets = load_afrisenti(langs, data_dir, download=not no_download)
    rows = []
    for lang, ds in datasets.items():
        counts = {split: len(exs) for split, exs in ds.splits.items()}
        labels = {lab: sum(ex.label == lab for ex in ds.splits["train"]) for lab in ds.labels}
        rows.append({"language": lang, **counts, "train_labels": labels})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table("AfriSenti", ["language", "train", "dev", "test", "train labels (neg/neu/pos)"],
                 [[r["language"], r["train"], r["dev"], r["test"], "/".join(str(v) for v in r["train_labels"].values())]
                  for r in rows])


def _split_languages(values: tuple[str, ...] | list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


# ----------------------------------------------------------------------------- tokenizer


@cli.command("train-tokenizer")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write.")
@click.option("--vocab-size", type=click.IntRange(min=16), default=8000, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--languages", "-l", multiple=True)
def train_tokenizer_cmd(out: Path, vocab_size: int, data_dir: Path | None, languages: tuple[str, ...]) -> None:
    """Train a SentencePiece-style unigram tokenizer on AfriSenti train text (never dev/test)."""
    from afrocomet.data.afrisenti import load_afrisenti
    from afrocomet.data.schema import DEFAULT_LANGUAGES
    from afrocomet.tokenizer import save_tokenizer, train_tokenizer

    langs = _split_languages(languages) or list(DEFAULT_LANGUAGES)
    datasets = load_afrisenti(langs, data_dir, splits=("train",))
    texts = [t for ds in datasets.values() for t in ds.texts("train")]
    tok = train_tokenizer(texts, vocab_size=vocab_size)
    save_tokenizer(tok, out)
    click.echo(f"trained a {len(tok):,}-piece unigram tokenizer on {len(texts):,} training texts -> {out}")


# ----------------------------------------------------------------------------- config


@cli.command("config")
@click.option("--quick", is_flag=True, help="The --quick variant of the built-in default.")
@click.option("--teacher", default=None, help="Teacher preset, Hugging Face id or folder.")
def config_cmd(quick: bool, teacher: str | None) -> None:
    """Print the resolved built-in default config as YAML (a starting point for --config)."""
    from afrocomet.config import to_yaml
    from afrocomet.pipeline import default_config

    click.echo(to_yaml(default_config(quick=quick, teacher=teacher)), nl=False)


# ----------------------------------------------------------------------------- run


_DISTILL_FLAGS = ("kd_weight", "attention_weight", "hard_weight", "temperature", "matching", "attention_loss",
                  "adaptive", "layer_map")


def _run_options(fn):
    """Options shared by `run` and `distill`; each maps to one config field."""
    options = [
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Output folder (default runs/afrocomet, or runs/quick with --quick).  [out]"),
        click.option("--quick", is_flag=True, help="Tiny sizes and few steps (about a minute), for tests and a look."),
        click.option("--languages", "-l", multiple=True, help="AfriSenti languages, e.g. hau,swa (default: the five).  [data.languages]"),
        click.option("--teacher", default=None, help="Teacher: preset, Hugging Face id (Davlan/afro-xlmr-large) or folder.  [model.teacher]"),
        click.option("--student", default=None, help="Student preset (comet, demo-student, ...) or folder.  [model.student]"),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="AfriSenti folder; default $AFROCOMET_DATA, then the cache, then download.  [data.data_dir]"),
        click.option("--train", "train_file", default=None, help="Your own train TSV (tweet/text, label, optional ID).  [data.train]"),
        click.option("--dev", "dev_file", default=None, help="Your own dev TSV (default: 10%% of train).  [data.dev]"),
        click.option("--test", "test_file", default=None, help="Your own test TSV.  [data.test]"),
        click.option("--extra-text", multiple=True, help="Unlabelled text file (one text a line) for stage 1.  [data.extra_text]"),
        click.option("--seed", type=int, default=None, help="Random seed.  [seed]"),
        click.option("--seeds", type=click.IntRange(min=1), default=None, help="Repeat the student stages with N seeds.  [seeds]"),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:1 ...  [device]"),
        click.option("--kd-weight", type=float, default=None, help="Weight of logit KD in distillation stages."),
        click.option("--attention-weight", type=float, default=None, help="Weight of attention matching."),
        click.option("--hard-weight", type=float, default=None, help="Weight of the hard-label loss."),
        click.option("--temperature", type=float, default=None, help="Soft-target temperature T."),
        click.option("--matching", type=click.Choice(["mean", "projection", "relations"]), default=None,
                     help="Attention matching mode."),
        click.option("--attention-loss", type=click.Choice(["kl", "mse"]), default=None, help="Loss on attention maps."),
        click.option("--adaptive", type=click.Choice(["none", "magnitude", "uncertainty"]), default=None,
                     help="Balance the loss terms as training goes."),
        click.option("--layer-map", default=None, help="Student:teacher layer pairs, e.g. 0:5,1:11,2:17,3:23 (0-based)."),
        click.option("--no-ablations", is_flag=True, help="Train only the hybrid student (no kd-only / no-distill).  [ablations]"),
        click.option("--student-init", type=click.Choice(["random", "teacher"]), default=None,
                     help="Student weights: random, or a PCA projection of the teacher's.  [model.student_init]"),
        click.option("--compare-init", is_flag=True,
                     help="Also train the hybrid student with the other --student-init.  [compare_init]"),
        click.option("--no-teacher-cache", is_flag=True,
                     help="Run the teacher every step of stage 2 instead of reading its cached outputs.  [teacher_cache]"),
        click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with a Hub model to run.  [model.trust_remote_code]"),
        click.option("--overwrite", is_flag=True, help="Replace an output folder that holds another run."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _parse_layer_map(text: str) -> list[list[int]]:
    try:
        return [[int(a), int(b)] for a, b in (pair.split(":") for pair in text.split(",") if pair.strip())]
    except ValueError as exc:
        raise AfroCometError(f"--layer-map: expected pairs like 0:5,1:11 (student:teacher), got {text!r}") from exc


def _resolve_config(config_file: Path | None, opts: dict):
    """Config file (or the built-in default), then flags on top; validated."""
    from afrocomet.config import load_config, validate
    from afrocomet.pipeline import default_config

    quick, teacher = opts["quick"], opts["teacher"]
    config = load_config(config_file) if config_file else default_config(quick=quick, teacher=teacher)
    config.quick = config.quick or quick
    if opts["out"] is not None:
        config.out = str(opts["out"])
    elif config_file is None:
        config.out = "runs/quick" if quick else "runs/afrocomet"
    langs = _split_languages(opts["languages"])
    if langs:
        config.data.languages = langs
    fields = {"teacher": ("model", "teacher"), "student": ("model", "student"), "data_dir": ("data", "data_dir"),
              "train_file": ("data", "train"), "dev_file": ("data", "dev"), "test_file": ("data", "test"),
              "seed": (None, "seed"), "seeds": (None, "seeds"), "device": (None, "device")}
    for key, (section, name) in fields.items():
        value = opts[key]
        if value is not None:
            setattr(getattr(config, section) if section else config, name, str(value) if section == "data" else value)
    if opts["extra_text"]:
        config.data.extra_text = list(opts["extra_text"])
    if opts["trust_remote_code"]:
        config.model.trust_remote_code = True
    if opts["no_ablations"]:
        config.ablations = False
    if opts["student_init"] is not None:
        config.model.student_init = opts["student_init"]
    if opts["compare_init"]:
        config.compare_init = True
    if opts["no_teacher_cache"]:
        for stage in config.stages:
            stage.teacher_cache = False
    if opts["layer_map"] is not None:
        opts = {**opts, "layer_map": _parse_layer_map(opts["layer_map"])}
    for stage in config.stages:
        if stage.kind in ("distill-mlm", "distill-task"):
            for name in _DISTILL_FLAGS:
                if opts[name] is not None:
                    setattr(stage, name, opts[name])
    return validate(config)


def _run(config_file: Path | None, opts: dict) -> None:
    import logging

    from afrocomet.pipeline import run as run_pipeline

    logging.basicConfig(level=logging.WARNING if opts["quiet"] else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    config = _resolve_config(config_file, opts)
    results = run_pipeline(config, overwrite=opts["overwrite"], progress=not opts["quiet"])
    _print_summary(results, Path(config.out))


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML run config (see `afrocomet config`); flags given here override it.")
@_run_options
def run(config_file, **opts) -> None:
    """Run the whole method: data, tokenizer, teacher, stage 1, stage 2, evaluation, report."""
    _run(config_file, opts)


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="YAML config with the list of stages to run (see `afrocomet config`).")
@_run_options
def distill(config_file, **opts) -> None:
    """Run the stages a config file lists (any order of teacher and student stages), then evaluate."""
    _run(config_file, opts)


def _print_summary(results: dict, out: Path) -> None:
    systems = results["systems"]
    rows = [[lang] + [f"{100 * row[s]['weighted_f1']:.2f}" for s in systems] for lang, row in results["languages"].items()]
    rows.append(["average"] + [f"{100 * results['average'][s]['weighted_f1']:.2f}" for s in systems])
    _print_table("weighted F1 (%) on test", ["language", *systems], rows)
    r, e = results["retention"], results["efficiency"]["ratios"]
    click.echo(f"retention (student/teacher): weighted F1 {r['weighted_f1']:.3f}, accuracy {r['accuracy']:.3f}; "
               f"student is {e['parameters']:.1f}x smaller and {e['latency_ms_p50']:.1f}x faster (p50, batch 1)")
    click.echo(f"wrote {out}/ (report.md, results.json, plots/, predictions/, teacher/, student/) "
               f"in {results['wall_seconds']:.0f}s")


# ----------------------------------------------------------------------------- predict / evaluate


def _metrics_line(m: dict) -> str:
    return (f"weighted F1 {100 * m['weighted_f1']:.2f}%, accuracy {100 * m['accuracy']:.2f}%, "
            f"macro F1 {100 * m['macro_f1']:.2f}% on {m['n']} labelled texts")


@cli.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Saved classifier folder (config.json, model.safetensors, tokenizer), e.g. runs/afrocomet/student.")
@click.option("--input", "input_file", required=True, help="TSV with a tweet/text column [+ label, ID]; '-' for stdin.")
@click.option("--output", "output_file", required=True, help="TSV to write (ID<TAB>label); '-' for stdout.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="Tokens per text; longer texts are truncated. Default: the model's limit, at most 512.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with the model folder to run.")
def predict(model_dir, input_file, output_file, batch_size, max_length, device, trust_remote_code) -> None:
    """Label a TSV file with a saved classifier (streamed: any file size); scores it if it has labels."""
    from afrocomet.predict import predict_file

    result = predict_file(model_dir, input_file, output_file, batch_size=batch_size, max_length=max_length,
                          device=device, trust_remote_code=trust_remote_code)
    where = "" if output_file == "-" else f" -> {output_file}"
    click.echo(f"predicted {result['n']} texts, {result['truncated']} truncated "
               f"(max length {result['max_length']}){where}", err=True)
    if result["metrics"] is not None:
        click.echo(_metrics_line(result["metrics"]), err=True)


@cli.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="Saved classifier folder.")
@click.option("--languages", "-l", multiple=True, help="AfriSenti languages (default hau ibo kin swa yor).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AfriSenti folder; default $AFROCOMET_DATA, then the cache, then download.")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default="test", show_default=True)
@click.option("--test", "test_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Your own labelled TSV instead of AfriSenti.")
@click.option("--no-download", is_flag=True, help="Never download AfriSenti; fail if it is not found.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="Default: the model's limit, at most 512.")
@click.option("--device", default="auto", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the metrics as JSON.")
@click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with the model folder to run.")
def evaluate(model_dir, languages, data_dir, split, test_file, no_download, batch_size, max_length, device, out,
             trust_remote_code) -> None:
    """Score a saved classifier on AfriSenti (per language and average) or on your own test file."""
    from afrocomet.data.schema import DEFAULT_LANGUAGES
    from afrocomet.io import atomic_write_json
    from afrocomet.predict import evaluate_model

    result = evaluate_model(model_dir, languages=_split_languages(languages) or list(DEFAULT_LANGUAGES),
                            data_dir=data_dir, split=split, test=test_file, batch_size=batch_size,
                            max_length=max_length, device=device, download=not no_download,
                            trust_remote_code=trust_remote_code)
    keys = ("accuracy", "weighted_f1", "macro_f1")
    rows = [[name, m["n"], *(f"{100 * m[k]:.2f}" for k in keys), m["truncated"]]
            for name, m in result["languages"].items()]
    rows.append(["average", sum(m["n"] for m in result["languages"].values()),
                 *(f"{100 * result['average'][k]:.2f}" for k in keys), ""])
    on = result["test"] or f"AfriSenti {split}"
    _print_table(f"{model_dir} on {on} (%)", ["language", "n", "accuracy", "weighted F1", "macro F1", "truncated"],
                 rows)
    if out is not None:
        atomic_write_json(out, result)
        click.echo(f"wrote {out}")


# ----------------------------------------------------------------------------- doctor


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML run config to check (default: the built-in default).")
@click.option("--quick", is_flag=True, help="Check the --quick variant of the built-in default.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--device", default=None, help="auto, cpu, cuda ...")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(config_file: Path | None, quick: bool, data_dir: Path | None, device: str | None, as_json: bool) -> None:
    """Pre-flight: memory estimate per stage and the invariants whose silent breakage ruins KD runs."""
    from afrocomet.config import load_config
    from afrocomet.distill.doctor import run_doctor
    from afrocomet.pipeline import default_config

    config = load_config(config_file) if config_file else default_config(quick=quick)
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    checks = run_doctor(config, device=device)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        _print_table("afrocomet doctor", ["stage", "check", "ok", "detail"],
                     [[c.stage, c.name, "yes" if c.ok else "NO", c.detail] for c in checks])
    failed = [c for c in checks if not c.ok]
    if failed:
        raise AfroCometError(f"{len(failed)} pre-flight check(s) failed: "
                             + "; ".join(f"{c.stage} {c.name}: {c.detail}" for c in failed))


# ----------------------------------------------------------------------------- entry point


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: temporary output is removed, nothing half-written


def main(argv: list[str] | None = None) -> int:
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        cli.main(args=argv, prog_name="afrocomet", standalone_mode=False)
    except AfroCometError as exc:
        click.echo(f"afrocomet: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("afrocomet: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("afrocomet: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
