"""Atomic writes: a reader never sees a half-written file or folder.

Files are written to a temporary sibling, flushed and fsynced, then renamed over the target
(`os.replace` is atomic on POSIX and Windows). Folders are built in a temporary sibling and
renamed into place; an existing folder is moved aside first and removed only after the swap.

A write that fails in the file system (disk full, read-only, not a folder, ...) is one
`AfroCometError` naming the target, whether Python raised it (`OSError`) or a library written in
Rust did (tokenizers, safetensors: `Exception("... (os error 28)")`; see `as_os_error`); the
temporary sibling is removed and the target left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from afrocomet.errors import AfroCometError


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how Rust's std::io::Error ends its message


def as_os_error(exc: BaseException) -> OSError | None:
    """`exc` as the file-system error it is or reports: an `OSError`, or a library's exception whose
    message carries Rust's `(os error N)` (tokenizers and safetensors saving to a full disk); else None."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, Exception) and not isinstance(exc, AfroCometError):
        found = _RUST_OS_ERROR.search(str(exc))
        if found:
            number = int(found.group(1))
            return OSError(number, os.strerror(number))
    return None


def write_error(exc: OSError, target: Path, what: str = "") -> AfroCometError:
    return AfroCometError(f"could not write{what}: {exc.strerror or exc}", path=target)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` atomically.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    `target` is left as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(exc, target) from exc
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        found = as_os_error(exc)
        if found is not None:
            raise write_error(found, target) from exc
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | Path, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, obj: Any) -> Path:
    return atomic_write_text(target, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def replace_dir(source: Path, target: Path) -> None:
    """Move the complete folder `source` to `target`; an existing `target` is removed only after the swap."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(source, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling, then move it into place as a whole.

    If `target` exists it is replaced only once the new folder is complete.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise write_error(exc, target, " folder") from exc
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        replace_dir(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        found = as_os_error(exc)
        if found is not None:
            raise write_error(found, target, " folder") from exc
        raise
