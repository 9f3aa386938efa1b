"""The working folder of a run: built in `<out>.partial/`, moved to `<out>` only once complete.

The rule for a run that does not finish:

- a Python exception, Ctrl-C or SIGTERM keeps `<out>.partial/` if it holds something to resume
  from (a finished stage or a checkpoint) and removes it otherwise;
- SIGKILL, an out-of-memory kill or a power cut leave it as it is (checkpoints are written
  atomically, so the newest complete one is always usable).

`afrocomet run --resume <out>` (or `<out>.partial`) continues it with its saved `config.yaml`.
What only resuming needs lives in `<out>.partial/resume/` (the tokenizer, each finished stage's
weights and result, the running stage's checkpoints) and is removed before the final move.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Iterator

from afrocomet.errors import AfroCometError
from afrocomet.io import replace_dir

log = logging.getLogger("afrocomet")

PARTIAL_SUFFIX = ".partial"
STATE = "resume"  # <partial>/resume/{tokenizer, stages/<name>, checkpoints/<name>/step-N}


def partial_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def resume_target(path: str | Path) -> tuple[Path, Path]:
    """(final output folder, partial folder) for `--resume PATH`, which may name either one."""
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX) and len(path.name) > len(PARTIAL_SUFFIX):
        out, partial = path.with_name(path.name[: -len(PARTIAL_SUFFIX)]), path
    else:
        out, partial = path, partial_dir(path)
    if not (partial / "config.yaml").is_file():
        if (out / "results.json").is_file():
            raise AfroCometError(f"nothing to resume: {out} is a finished run", path=partial)
        raise AfroCometError("nothing to resume: no interrupted run here (expected config.yaml)", path=partial)
    return out, partial


def has_resumable_state(partial: Path) -> bool:
    """True when a finished stage or a complete checkpoint is saved."""
    state = partial / STATE
    return any(state.glob("stages/*/result.json")) or any(state.glob("checkpoints/*/step-*/state.json"))


@contextlib.contextmanager
def run_folder(out: Path, *, resume: bool = False, overwrite: bool = False, main: bool = True) -> Iterator[Path]:
    """Yield `<out>.partial/` to build the run in; on success it becomes `<out>` (see the module rule).

    With several processes only the main one (`main`) creates, keeps, removes or moves the folder.
    """
    from afrocomet.distill.parallel import processes

    partial = partial_dir(out)
    if not main:
        processes().barrier()  # the main process has made the folder
        yield partial
        return
    if not resume and partial.exists():
        if not overwrite:
            raise AfroCometError(f"an interrupted run is here: continue it with `afrocomet run --resume {out}` "
                                 "or pass --overwrite to start again", path=partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    processes().barrier()
    try:
        yield partial
    except BaseException:
        if has_resumable_state(partial):
            log.warning("run stopped: kept %s; continue it with `afrocomet run --resume %s`", partial, out)
        else:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(partial / STATE, ignore_errors=True)
    try:
        replace_dir(partial, out)
    except OSError as exc:
        raise AfroCometError(f"could not move the finished run into place: {exc.strerror or exc}", path=out) from exc
