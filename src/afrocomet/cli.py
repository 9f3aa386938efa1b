"""The `afrocomet` command. Thin: parses options, calls the Python API, prints.

Every `AfroCometError` becomes one line on stderr (`afrocomet: error: ...`) and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import click

from afrocomet import quiet
from afrocomet.errors import AfroCometError

_ARGV: list[str] = []  # this command's arguments, to start it again under `accelerate launch`


def _console():
    from rich.console import Console

    return Console()


def _print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in ("name", "system", "language", "description", "metric") else "right")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    _console().print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="afrocomet")
@click.option("--verbose", is_flag=True, help="Also show the warnings and log messages of the libraries underneath.")
def cli(verbose: bool) -> None:
    """Hybrid knowledge distillation of multilingual models for African languages (AfroXLMR-Comet)."""
    quiet.setup(verbose)


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


@cli.command("trim-vocab")
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
    from afrocomet.data.schema import DEFAULT_LANGUAGES
    from afrocomet.models.vocab import afrisenti_texts, check_trim_input, trim_folder

    check_trim_input(model_dir, min_count)  # before the data is read
    texts = afrisenti_texts(_split_languages(languages) or list(DEFAULT_LANGUAGES), data_dir, extra_text,
                            download=not no_download)
    report = trim_folder(model_dir, out, texts, min_count=min_count)
    click.echo(f"{report.summary()} -> {out}")


# ----------------------------------------------------------------------------- config


@cli.command("config")
@click.option("--quick", is_flag=True, help="The --quick variant of the built-in default.")
@click.option("--teacher", default=None, help="Teacher preset, Hugging Face id or folder.")
def config_cmd(quick: bool, teacher: str | None) -> None:
    """Print the resolved built-in default config as YAML (a starting point for --config)."""
    from afrocomet.config import to_yaml
    from afrocomet.run import default_config

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
        click.option("--per-language", is_flag=True, help="One student per language instead of one multilingual student.  [data.per_language]"),
        click.option("--sampling-alpha", type=float, default=None,
                     help="Language sampling p ∝ n^alpha, fixed (no search on dev unless --alpha-candidates).  [data.sampling_alpha]"),
        click.option("--alpha-candidates", default=None,
                     help="Choose alpha on dev among these (default 0.3,0.5,1.0; '' = no search).  [data.alpha_candidates]"),
        click.option("--compare-adaptive", type=click.Choice(["none", "magnitude", "uncertainty"]), default=None,
                     help="Also train student_adaptive with this loss balancing and report which won.  [compare_adaptive]"),
        click.option("--no-ablations", is_flag=True, help="Train only the hybrid student (no kd-only / no-distill).  [ablations]"),
        click.option("--student-init", type=click.Choice(["random", "teacher"]), default=None,
                     help="Student weights: random, or a PCA projection of the teacher's.  [model.student_init]"),
        click.option("--compare-init", is_flag=True,
                     help="Also train the hybrid student with the other --student-init.  [compare_init]"),
        click.option("--no-teacher-cache", is_flag=True,
                     help="Run the teacher every step of stage 2 instead of reading its cached outputs.  [teacher_cache]"),
        click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with a Hub model to run.  [model.trust_remote_code]"),
        click.option("--trim-vocab/--no-trim-vocab", default=None,
                     help="Keep only the vocabulary rows the training text uses, in teacher and student, before "
                          "stage 1 (default: on with a Hub/folder teacher).  [model.trim_vocab]"),
        click.option("--overwrite", is_flag=True, help="Replace an output folder that holds another run."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
        click.option("--num-processes", type=click.IntRange(min=1), default=None,
                     help="Data-parallel processes on this machine, started with `accelerate launch` (one per GPU; "
                          "on CPU, gloo). For several machines call `accelerate launch` yourself (see README)."),
        click.option("--resume", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Continue an interrupted run (its OUT or OUT.partial folder) from its last checkpoint, "
                          "with its saved config; finished stages are skipped."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _parse_layer_map(text: str) -> list[list[int]]:
    try:
        return [[int(a), int(b)] for a, b in (pair.split(":") for pair in text.split(",") if pair.strip())]
    except ValueError as exc:
        raise AfroCometError(f"--layer-map: expected pairs like 0:5,1:11 (student:teacher), got {text!r}") from exc


def _parse_floats(flag: str, text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise AfroCometError(f"{flag}: expected comma-separated numbers like 0.3,0.5,1.0, got {text!r}") from exc


def _resolve_config(config_file: Path | None, opts: dict, base=None):
    """Config file (or `base`, or the built-in default), then flags on top; validated."""
    from afrocomet.config import load_config, validate
    from afrocomet.run import default_config

    quick, teacher = opts["quick"], opts["teacher"]
    if config_file:
        config = load_config(config_file)
    else:
        config = base if base is not None else default_config(quick=quick, teacher=teacher)
    config.quick = config.quick or quick
    if opts["out"] is not None:
        config.out = str(opts["out"])
    elif config_file is None and base is None:
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
    if opts.get("trim_vocab") is not None:
        config.model.trim_vocab = opts["trim_vocab"]
    if opts["no_ablations"]:
        config.ablations = False
    if opts["per_language"]:
        config.data.per_language = True
    if opts["sampling_alpha"] is not None:
        config.data.sampling_alpha = opts["sampling_alpha"]
        if opts["alpha_candidates"] is None:
            config.data.alpha_candidates = []  # a fixed alpha was asked for: no search
    if opts["alpha_candidates"] is not None:
        config.data.alpha_candidates = _parse_floats("--alpha-candidates", opts["alpha_candidates"])
    if opts["compare_adaptive"] is not None:
        config.compare_adaptive = opts["compare_adaptive"]
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

    from afrocomet.run import run as run_pipeline

    logging.basicConfig(level=logging.WARNING if opts["quiet"] else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    if opts["num_processes"] and opts["num_processes"] > 1 and "WORLD_SIZE" not in os.environ:
        _launch(opts["num_processes"])
        return
    if opts["resume"] is not None:
        config = _resume_config(config_file, opts)
    else:
        config = _resolve_config(config_file, opts)
    results = run_pipeline(config, overwrite=opts["overwrite"], progress=not opts["quiet"],
                           resume=opts["resume"] is not None, source=str(config_file) if config_file else "config")
    if results:  # the main process's; the others return nothing
        _print_summary(results, Path(config.out))


def _launch(num_processes: int) -> None:
    """Run this very command again under `accelerate launch` with `num_processes` processes."""
    import subprocess

    from afrocomet.distill.parallel import launch_command

    args, skip = [], False
    for arg in _ARGV:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            args.append(arg)
    code = subprocess.call(launch_command(num_processes, args))
    if code:
        raise AfroCometError(f"accelerate launch with {num_processes} processes failed (exit code {code})")


def _resume_config(config_file: Path | None, opts: dict):
    """--resume DIR: the saved config; a config file or flags given too must agree with it."""
    from afrocomet.config import load_config
    from afrocomet.workdir import resume_target

    out, partial = resume_target(opts["resume"])
    if opts["out"] is not None and Path(opts["out"]).resolve() != out.resolve():
        raise AfroCometError(f"--resume {opts['resume']} writes to {out}; --out {opts['out']} conflicts with it")
    return _resolve_config(config_file, {**opts, "out": out}, base=load_config(partial / "config.yaml"))


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML run config (see `afrocomet config`); flags given here override it.")
@_run_options
def run(config_file, **opts) -> None:
    """Run the whole method: data, tokenizer, teacher, stage 1, stage 2, evaluation, report."""
    _run(config_file, opts)


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML config with the list of stages to run (see `afrocomet config`); required unless --resume.")
@_run_options
def distill(config_file, **opts) -> None:
    """Run the stages a config file lists (any order of teacher and student stages), then evaluate."""
    if config_file is None and opts["resume"] is None:
        raise click.UsageError("Missing option '--config' (or --resume DIR to continue an interrupted run).")
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


_ONNX_FILE_HELP = ("Run this ONNX file of the folder with ONNX Runtime, e.g. model.int8.onnx (an exported "
                   "folder runs its model.onnx by default).")


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
@click.option("--onnx-file", default=None, help=_ONNX_FILE_HELP)
def predict(model_dir, input_file, output_file, batch_size, max_length, device, trust_remote_code, onnx_file) -> None:
    """Label a TSV file with a saved classifier (streamed: any file size); scores it if it has labels."""
    from afrocomet.predict import predict_file

    result = predict_file(model_dir, input_file, output_file, batch_size=batch_size, max_length=max_length,
                          device=device, trust_remote_code=trust_remote_code, onnx_file=onnx_file)
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
@click.option("--onnx-file", default=None, help=_ONNX_FILE_HELP)
def evaluate(model_dir, languages, data_dir, split, test_file, no_download, batch_size, max_length, device, out,
             trust_remote_code, onnx_file) -> None:
    """Score a saved classifier on AfriSenti (per language and average) or on your own test file."""
    from afrocomet.data.schema import DEFAULT_LANGUAGES
    from afrocomet.io import atomic_write_json
    from afrocomet.predict import evaluate_model

    result = evaluate_model(model_dir, languages=_split_languages(languages) or list(DEFAULT_LANGUAGES),
                            data_dir=data_dir, split=split, test=test_file, batch_size=batch_size,
                            max_length=max_length, device=device, download=not no_download,
                            trust_remote_code=trust_remote_code, onnx_file=onnx_file)
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


# ----------------------------------------------------------------------------- export


@cli.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Saved classifier folder (config.json, model.safetensors, tokenizer), e.g. runs/afrocomet/student.")
@click.option("--onnx", is_flag=True, help="Export to ONNX (model.onnx, fp32); the only format for now.")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (dynamic int8 quantisation); needs --onnx.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write (new, or an earlier export).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AfriSenti folder for the parity texts (test split); default $AFROCOMET_DATA, then the cache.")
@click.option("--languages", "-l", multiple=True, help="AfriSenti languages whose test tweets check parity.")
@click.option("--texts", "texts_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Check parity on this TSV (tweet/text column) instead of AfriSenti.")
@click.option("--max-texts", type=click.IntRange(min=1), default=None, help="Check parity on at most N texts.")
@click.option("--opset", type=click.IntRange(min=14), default=17, show_default=True, help="ONNX opset.")
@click.option("--max-length", type=click.IntRange(min=2), default=None, help="Tokens per parity text (default: the model's limit).")
def export(model_dir, onnx, int8, out, data_dir, languages, texts_file, max_texts, opset, max_length) -> None:
    """Export a saved classifier to ONNX (and int8), with parity against PyTorch checked and saved."""
    from afrocomet.data.schema import DEFAULT_LANGUAGES
    from afrocomet.export import export_onnx

    if not onnx:
        raise AfroCometError("choose an export format: --onnx (int8 with --onnx --int8)")
    result = export_onnx(model_dir, out, int8=int8, opset=opset, data_dir=data_dir, texts=texts_file,
                         languages=_split_languages(languages) or list(DEFAULT_LANGUAGES), max_texts=max_texts,
                         max_length=max_length)
    fp32 = result["fp32"]
    click.echo(f"fp32 {fp32['file']}: max |logit diff| vs PyTorch {fp32['max_abs_logit_diff']:.2e} on "
               f"{fp32['n']} texts ({result['texts']['source']})")
    if "int8" in result:
        q = result["int8"]
        click.echo(f"int8 {q['file']}: label agreement with PyTorch {100 * q['label_agreement']:.2f}% "
                   f"(goal {100 * q['goal']:.0f}%){'' if q['ok'] else ' -- BELOW THE GOAL, ok: false'}")
    click.echo(f"wrote {out}/ (model.onnx{', model.int8.onnx' if int8 else ''}, config.json, tokenizer, parity.json)")


# ----------------------------------------------------------------------------- bench


@cli.command()
@click.option("--teacher", default="afroxlmr-large", show_default=True,
              help="Preset (random weights, e.g. afroxlmr-large) or saved classifier folder.")
@click.option("--student", default="comet", show_default=True, help="Preset (e.g. comet) or saved classifier folder.")
@click.option("--onnx", "onnx_dir", type=click.Path(path_type=Path), default=None,
              help="Exported ONNX folder: adds columns onnx-fp32 and, if present, onnx-int8.")
@click.option("--texts", "n_texts", type=click.IntRange(min=1), default=200, show_default=True,
              help="Real AfriSenti test tweets to time (drawn with seed 0).")
@click.option("--languages", "-l", multiple=True, help="AfriSenti languages of the tweets (default: the five).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AfriSenti folder; default $AFROCOMET_DATA, then the cache, then download.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda ... (ONNX columns run on the CPU).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: torch's).")
@click.option("--max-length", type=click.IntRange(min=2), default=128, show_default=True, help="Tokens per text at most.")
@click.option("--compile", "compile_", is_flag=True,
              help="Also time both models through torch.compile (fp32; columns teacher-compiled, student-compiled).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result instead of a table.")
def bench(teacher, student, onnx_dir, n_texts, languages, data_dir, device, threads, max_length, compile_,
          as_json) -> None:
    """Teacher vs student (vs ONNX): size, latency, throughput and memory on real tweets, with ratios."""
    from afrocomet.bench import bench_rows, run_bench

    result = run_bench(teacher, student, onnx_dir, languages=_split_languages(languages) or None, data_dir=data_dir,
                       n_texts=n_texts, device=device, threads=threads, max_length=max_length, compile=compile_)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    header, rows = bench_rows(result)
    _print_table(f"afrocomet bench: {result['device']}, {result['threads']} threads", header, rows)
    click.echo(f"ratios: teacher / column (throughput: column / teacher). texts: {result['texts']['source']}; "
               f"tokenizer: {result['tokenizer']}")
    if "ratios_compiled" in result:
        r = result["ratios_compiled"]
        click.echo(f"compiled vs compiled: student {r['latency']:.1f}x faster p50, {r['throughput']:.1f}x throughput")


# ----------------------------------------------------------------------------- doctor


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML run config to check (default: the built-in default).")
@click.option("--quick", is_flag=True, help="Check the --quick variant of the built-in default.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--device", default=None, help="auto, cpu, cuda ...")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--trust-remote-code", is_flag=True, help="Allow code shipped with a Hub model to run.  [model.trust_remote_code]")
def doctor(config_file: Path | None, quick: bool, data_dir: Path | None, device: str | None, as_json: bool,
           trust_remote_code: bool) -> None:
    """Pre-flight: memory estimate per stage and the invariants whose silent breakage ruins KD runs."""
    from afrocomet.config import load_config
    from afrocomet.distill.doctor import run_doctor
    from afrocomet.run import default_config

    config = load_config(config_file) if config_file else default_config(quick=quick)
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    if trust_remote_code:
        config.model.trust_remote_code = True
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


_NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def main(argv: list[str] | None = None) -> int:
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        with quiet.cli_output():  # warnings as one `afrocomet: warning:` line; library noise only with --verbose
            cli.main(args=argv, prog_name="afrocomet", standalone_mode=False)
    except AfroCometError as exc:
        click.echo(f"afrocomet: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("afrocomet: interrupted", err=True)
        return 130
    except _NO_ARGS_HELP as exc:  # `afrocomet` alone: the help text, as click shows it
        exc.show()
        return exc.exit_code
    except click.ClickException as exc:  # a bad flag or value: one line too, naming the option
        command = exc.ctx.command_path if getattr(exc, "ctx", None) else "afrocomet"
        message = " ".join(exc.format_message().split())
        click.echo(f"afrocomet: error: {message} (see '{command} --help')", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("afrocomet: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
