"""`afrocomet doctor`: the pre-flight checks of a run config, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from afrocomet.cli.table import print_table
from afrocomet.errors import AfroCometError


@click.command("doctor")
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

    if quick and config_file:
        from afrocomet.cli.run_cmd import refuse_quick_with

        refuse_quick_with(f"--config {config_file}")
    config = load_config(config_file) if config_file else default_config(quick=quick)
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    if trust_remote_code:
        config.model.trust_remote_code = True
    checks = run_doctor(config, device=device)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        print_table("afrocomet doctor", ["stage", "check", "ok", "detail"],
                    [[c.stage, c.name, "yes" if c.ok else "NO", c.detail] for c in checks])
    failed = [c for c in checks if not c.ok]
    if failed:
        raise AfroCometError(f"{len(failed)} pre-flight check(s) failed: "
                             + "; ".join(f"{c.stage} {c.name}: {c.detail}" for c in failed))
