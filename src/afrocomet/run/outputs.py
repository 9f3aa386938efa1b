"""The run's output folder: never replace another run's results unless asked, and resume only with
the saved config."""

from __future__ import annotations

from pathlib import Path

from afrocomet.config import RunConfig
from afrocomet.errors import AfroCometError


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an `out` that a live run is writing, and to replace another run's results unless asked to."""
    from afrocomet.workdir import check_not_locked

    check_not_locked(out)
    if out.exists() and not out.is_dir():
        raise AfroCometError("output path exists and is not a folder", path=out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "another run's results" if (out / "results.json").exists() else "files"
        raise AfroCometError(f"output folder already holds {what}; pass --overwrite or choose another --out", path=out)


def check_resume_config(config: RunConfig, partial: Path) -> None:
    """Refuse to resume with a config other than the saved one (`out` may differ)."""
    from afrocomet.config import load_config, to_dict

    saved = to_dict(load_config(partial / "config.yaml"))
    given = to_dict(config)
    saved.pop("out"), given.pop("out")
    diff = _first_difference(saved, given)
    if diff is not None:
        key, a, b = diff
        raise AfroCometError(f"--resume: the given config differs from the saved one in {key or 'the config'} "
                             f"(saved {a!r}, given {b!r}); resume without flags to use the saved config",
                             path=partial / "config.yaml")


def _first_difference(a, b, key: str = ""):
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return next((d for k in a if (d := _first_difference(a[k], b[k], f"{key}.{k}" if key else k))), None)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _first_difference(x, y, f"{key}[{i}]"))), None)
    return None if a == b else (key, a, b)



def check_resume(config: RunConfig, out: Path) -> None:
    """`--resume`: an interrupted run of `out` must be there, saved with the same config."""
    from afrocomet.workdir import partial_dir

    if not (partial_dir(out) / "config.yaml").is_file():
        raise AfroCometError("nothing to resume: no interrupted run here", path=partial_dir(out))
    check_resume_config(config, partial_dir(out))
