"""The run's output folder: never replace another run's results unless asked, and resume only with
the saved config."""

from __future__ import annotations

from pathlib import Path

from afrocomet.config import RunConfig
from afrocomet.errors import AfroCometError


# What a finished run folder holds (README "What a run gives you"): a folder holding anything else is
# never replaced, --overwrite or not.
RUN_FILES = ("config.yaml", "logs", "plots", "predictions", "report.md", "results.json", "student", "teacher")


def run_inputs(config: RunConfig, source: str = "config") -> list:
    """Everything a run reads from disk, as (what, path): the output may be none of them, contain none
    and lie inside none (`afrocomet.outputs`); Hub ids and presets are no paths and drop out there."""
    from afrocomet.data.download import data_files_in_use
    from afrocomet.models.presets import is_preset

    d, m = config.data, config.model
    inputs = [("config file", None if source == "config" else source)]
    inputs += data_files_in_use(d.data_dir) if d.train is None else []
    inputs += [("train file", d.train), ("dev file", d.dev), ("test file", d.test)]
    inputs += [("extra text file", path) for path in d.extra_text]
    inputs += [(f"{role} folder", name) for role, name in (("teacher", m.teacher), ("student", m.student),
                                                            ("tokenizer", m.tokenizer))
               if name is not None and not is_preset(name)]
    return inputs


def check_output_dir(out: Path, overwrite: bool, inputs=()) -> None:
    """Refuse an `out` that a live run is writing, that is, holds or lies inside one of the run's
    `inputs`, that holds files a run does not write, or that holds another run's results (unless
    `overwrite`)."""
    from afrocomet.outputs import check_output_folder
    from afrocomet.workdir import check_not_locked

    check_not_locked(out)
    check_output_folder(out, inputs, writes=RUN_FILES, marker="results.json", what="a run", overwrite=overwrite,
                        earlier="another run's results")


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
