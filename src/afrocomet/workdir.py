"""The working folder of a run: built in `<out>.partial/`, moved to `<out>` only once complete.

The rule for a run that does not finish:

- a Python exception, Ctrl-C or SIGTERM keeps `<out>.partial/` if it holds something to resume
  from (a finished stage or a checkpoint) and removes it otherwise;
- SIGKILL, an out-of-memory kill or a power cut leave it as it is (checkpoints are written
  atomically, so the newest complete one is always usable).

`afrocomet run --resume <out>` (or `<out>.partial`) continues it with its saved `config.yaml`.
What only resuming needs lives in `<out>.partial/resume/` (the tokenizer, each finished stage's
weights and result, the running stage's checkpoints) and is removed before the final move.

While a run owns `<out>.partial/` it holds `<out>.partial/run.lock` (its pid and host): another run
on the same `--out` (with `--overwrite` or `--resume` too) is refused while that process lives; the
lock of a process that is gone (SIGKILL, power cut) is taken over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Iterator

from afrocomet.errors import AfroCometError
from afrocomet.io import replace_dir

log = logging.getLogger("afrocomet")

PARTIAL_SUFFIX = ".partial"
STATE = "resume"  # <partial>/resume/{tokenizer, stages/<name>, checkpoints/<name>/step-N}
LOCK = "run.lock"  # <partial>/run.lock: {"pid": N, "host": name} of the run writing it


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
    check_not_locked(out)
    if not (partial / "config.yaml").is_file():
        if (out / "results.json").is_file():
            raise AfroCometError(f"nothing to resume: {out} is a finished run", path=partial)
        raise AfroCometError("nothing to resume: no interrupted run here (expected config.yaml)", path=partial)
    return out, partial


def has_resumable_state(partial: Path) -> bool:
    """True when a finished stage or a complete checkpoint is saved."""
    state = partial / STATE
    return any(state.glob("stages/*/result.json")) or any(state.glob("checkpoints/*/step-*/state.json"))


def _lock_owner(partial: Path) -> dict | None:
    try:
        owner = json.loads((partial / LOCK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no lock, or not one of ours: nobody to wait for
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def _alive(owner: dict) -> bool:
    """Whether the lock's process still runs (one on another host is assumed to)."""
    if owner.get("host") != socket.gethostname():
        return True
    if owner["pid"] == os.getpid():
        return False  # a leftover of this very process
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _locked_error(out: Path, owner: dict) -> AfroCometError:
    where = "" if owner.get("host") == socket.gethostname() else f" on {owner.get('host')}"
    return AfroCometError(f"another run (pid {owner['pid']}{where}) is writing {out}; wait for it to finish, stop it, "
                          f"or choose another --out (its lock: {partial_dir(out) / LOCK})")


def check_not_locked(out: str | Path) -> None:
    """Refuse `out` while a live run is writing it."""
    owner = _lock_owner(partial_dir(out))
    if owner is not None and _alive(owner):
        raise _locked_error(Path(out), owner)


def _take_lock(partial: Path, out: Path) -> Path:
    """Create `<partial>/run.lock` atomically (a complete file or none); a dead run's lock is taken over."""
    lock, tmp = partial / LOCK, partial / f".{LOCK}.{os.getpid()}"
    tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    try:
        for _ in range(3):
            try:
                os.link(tmp, lock)
                return lock
            except FileExistsError:
                owner = _lock_owner(partial)
                if owner is not None and _alive(owner):
                    raise _locked_error(out, owner) from None
                log.info("taking over %s (its run is gone)", lock)
                lock.unlink(missing_ok=True)
        raise AfroCometError(f"could not lock {out}: another run keeps taking it", path=lock)
    finally:
        tmp.unlink(missing_ok=True)


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
    check_not_locked(out)
    if not resume and partial.exists():
        if not overwrite:
            raise AfroCometError(f"an interrupted run is here: continue it with `afrocomet run --resume {out}` "
                                 "or pass --overwrite to start again", path=partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(partial, out)
    processes().barrier()
    try:
        yield partial
    except BaseException:
        lock.unlink(missing_ok=True)
        if has_resumable_state(partial):
            log.warning("run stopped: kept %s; continue it with `afrocomet run --resume %s`", partial, out)
        else:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    lock.unlink(missing_ok=True)
    shutil.rmtree(partial / STATE, ignore_errors=True)
    try:
        replace_dir(partial, out)
    except OSError as exc:
        raise AfroCometError(f"could not move the finished run into place: {exc.strerror or exc}", path=out) from exc
