"""`afrocomet run`, `afrocomet distill` and `afrocomet config`: resolve the config, run it, print a summary."""

from __future__ import annotations

import os
from pathlib import Path

import click

from afrocomet.cli.options import apply_flags, config_options
from afrocomet.cli.table import print_table
from afrocomet.errors import AfroCometError


@click.command("config")
@click.option("--quick", is_flag=True, help="The --quick variant of the built-in default.")
@click.option("--teacher", default=None, help="Teacher preset, Hugging Face id or folder.")
def config_cmd(quick: bool, teacher: str | None) -> None:
    """Print the resolved built-in default config as YAML (a starting point for --config)."""
    from afrocomet.config import to_yaml
    from afrocomet.run import default_config

    click.echo(to_yaml(default_config(quick=quick, teacher=teacher)), nl=False)


def _run_options(fn):
    """Options of `run` and `distill`: --quick, one per config field, then how to run."""
    options = [
        click.option("--quick", is_flag=True,
                     help="Tiny sizes and few steps (a few minutes on 2 CPU cores), for tests and a look."),
        config_options,
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


@click.command("run")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML run config (see `afrocomet config`); flags given here override it.")
@_run_options
def run(config_file, **opts) -> None:
    """Run the whole method: data, tokenizer, teacher, stage 1, stage 2, evaluation, report."""
    _run(config_file, opts)


@click.command("distill")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML config with the list of stages to run (see `afrocomet config`); required unless --resume.")
@_run_options
def distill(config_file, **opts) -> None:
    """Run the stages a config file lists (any order of teacher and student stages), then evaluate."""
    if config_file is None and opts["resume"] is None:
        raise click.UsageError("Missing option '--config' (or --resume DIR to continue an interrupted run).")
    _run(config_file, opts)


def _resolve_config(config_file: Path | None, opts: dict, base=None):
    """Config file (or `base`, or the built-in default), then flags on top; validated."""
    from afrocomet.config import load_config, validate

    quick = opts["quick"]
    if quick and (config_file or base is not None):
        refuse_quick_with(f"--config {config_file}" if config_file else f"--resume {opts.get('resume')}")
    if config_file:
        config = load_config(config_file)
    elif base is not None:
        config = base
    else:
        from afrocomet.run import default_config  # torch and transformers: a bad config file fails before them

        config = default_config(quick=quick, teacher=opts["teacher"])
    if opts["out"] is None and config_file is None and base is None:
        config.out = "runs/quick" if quick else "runs/afrocomet"
    apply_flags(config, opts)
    if opts["sampling_alpha"] is not None and opts["alpha_candidates"] is None:
        config.data.alpha_candidates = []  # a fixed alpha was asked for: no search
    return validate(config)


def refuse_quick_with(what: str) -> None:
    """--quick picks the built-in default's tiny variant: a config file (or a resumed run's saved
    config) already fixes every size and step, so --quick beside it is refused rather than ignored."""
    raise AfroCometError(f"--quick cannot be combined with {what}: --quick selects the built-in default's tiny "
                         "variant, and a config already sets every size and step; drop --quick, or start from "
                         "`afrocomet config --quick > run.yaml`")


def _run(config_file: Path | None, opts: dict) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING if opts["quiet"] else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    if opts["num_processes"] and opts["num_processes"] > 1 and "WORLD_SIZE" not in os.environ:
        _launch(opts["num_processes"])
        return
    if int(os.environ.get("RANK", "0")) > 0:  # under `accelerate launch`: the main process tells the story
        logging.getLogger("afrocomet").setLevel(logging.WARNING)
    if opts["resume"] is not None:
        config = _resume_config(config_file, opts)
    else:
        config = _resolve_config(config_file, opts)
    from afrocomet.distill.parallel import leave
    from afrocomet.run import run as run_pipeline

    try:
        results = run_pipeline(config, overwrite=opts["overwrite"], progress=not opts["quiet"],
                               resume=opts["resume"] is not None, source=str(config_file) if config_file else "config")
    finally:
        leave()  # under `accelerate launch`: every process leaves the group itself (see parallel.leave)
    if results:  # the main process's; the others return nothing
        _print_summary(results, Path(config.out))


def _launch(num_processes: int) -> None:
    """Run this very command again under `accelerate launch` with `num_processes` processes."""
    import subprocess

    from afrocomet.distill.parallel import launch_command

    argv = (click.get_current_context().find_root().obj or {}).get("argv", [])  # set by afrocomet.cli.main
    args, skip = [], False
    for arg in argv:
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


def _print_summary(results: dict, out: Path) -> None:
    systems = results["systems"]
    rows = [[lang] + [f"{100 * row[s]['weighted_f1']:.2f}" for s in systems] for lang, row in results["languages"].items()]
    rows.append(["average"] + [f"{100 * results['average'][s]['weighted_f1']:.2f}" for s in systems])
    print_table("weighted F1 (%) on test", ["language", *systems], rows)
    from afrocomet.bench.efficiency import latency_ratio

    r, e = results["retention"], results["efficiency"]["ratios"]
    faster, how = latency_ratio(results["efficiency"])
    click.echo(f"retention (student/teacher): weighted F1 {r['weighted_f1']:.3f}, accuracy {r['accuracy']:.3f}; "
               f"student is {e['parameters']:.1f}x smaller and {faster:.1f}x faster (p50, batch 1, {how})")
    click.echo(f"wrote {out}/ (report.md, results.json, plots/, predictions/, teacher/, student/) "
               f"in {results['wall_seconds']:.0f}s")
