"""Where a command may write: the one check every command that writes makes first, before it reads
or computes anything.

- The output is never one of the command's inputs, never a folder that contains one, and never lies
  inside an input folder (`trim-vocab --out` = `--model`, `run --data-dir D --out D/hau`,
  `evaluate --test ev.tsv --out ev.tsv`, ...).
- An existing output folder is replaced only when all it holds is what the command itself writes
  (and, where the command marks its folders, the marker is there): afrocomet never deletes a file
  it did not write. `run` asks for --overwrite on top.
- The place can be written: a temporary file is made and removed in the nearest existing folder,
  so a read-only file system, or a path under a regular file, fails now in one line, not after the
  work (outputs are then written atomically by `afrocomet.io`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from afrocomet.errors import AfroCometError

Input = tuple[str, "str | Path | None"]  # (what it is, for the message, e.g. "model folder"; its path)

# What a Hugging Face folder holds after save_pretrained (model and tokenizer): the names a command
# that writes such a folder may replace.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "sentencepiece.bpe.model", "chat_template.jinja")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model-*-of-*.safetensors",
               "model.safetensors.index.json")
STDIO = "-"


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)  # hard links
    return False


def check_not_an_input(out: str | Path, inputs: Iterable[Input], flag: str = "--out") -> None:
    """Refuse an `out` that is an input, contains one, or lies inside an input folder."""
    target = Path(out).expanduser()
    where = target.resolve()
    for what, path in inputs:
        if path is None or str(path) == STDIO:
            continue
        given = Path(path).expanduser()
        if not given.exists():  # a Hub id, or nothing there: nothing to destroy
            continue
        source = given.resolve()
        if _same(target, given):
            raise AfroCometError(f"the output is also the {what} ({path}): writing it would destroy that input; "
                                 f"choose another {flag}", path=out)
        if source.is_relative_to(where):
            raise AfroCometError(f"the output folder contains the {what} ({path}): replacing the folder would "
                                 f"delete it; choose another {flag}", path=out)
        if given.is_dir() and where.is_relative_to(source):
            raise AfroCometError(f"the output lies inside the {what} ({path}); choose another {flag} outside it",
                                 path=out)


def check_writable(out: str | Path) -> None:
    """Make and remove a temporary file where `out` would be written (its nearest existing folder)."""
    target = Path(out).expanduser().absolute()
    base = target.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise AfroCometError(f"cannot write here: {base} is a file, not a folder", path=out)
    try:
        fd, name = tempfile.mkstemp(prefix=".afrocomet-can-write.", dir=base)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise AfroCometError(f"cannot write here: {exc.strerror or exc} ({base})", path=out) from None


def check_output_file(out: str | Path, inputs: Iterable[Input] = (), flag: str = "--out") -> Path:
    """An output file (`-`, stdout, passes): not an input, not a folder, writable."""
    if str(out) == STDIO:
        return Path(out)
    check_not_an_input(out, inputs, flag)
    path = Path(out).expanduser()
    if path.is_dir():
        raise AfroCometError(f"is a folder; {flag} takes a file name", path=out)
    check_writable(path)
    return path


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3 else "")


def check_output_folder(out: str | Path, inputs: Iterable[Input] = (), *, writes: Sequence[str], what: str,
                        marker: str | None = None, overwrite: bool | None = None, earlier: str = "an earlier output",
                        flag: str = "--out") -> Path:
    """An output folder: not an input (see `check_not_an_input`), writable, and either new, empty or
    an earlier output of the same command: every name in it matches one of `writes` (fnmatch
    patterns) and `marker`, if given, is there. With `overwrite=False` (a command with an
    --overwrite flag, not given) an earlier output is refused too."""
    path = Path(out).expanduser()
    check_not_an_input(path, inputs, flag)
    if path.exists() and not path.is_dir():
        raise AfroCometError(f"output path exists and is not a folder; choose another {flag}", path=out)
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    others = [n for n in entries if not any(fnmatch.fnmatchcase(n, w) for w in writes)]
    if others:
        raise AfroCometError(f"output folder holds other files ({_names(others)}) that {what} does not write; "
                             f"choose another {flag} (afrocomet never deletes files it did not write)", path=out)
    if entries and marker is not None and marker not in entries:
        raise AfroCometError(f"output folder holds files ({_names(entries)}) but no {marker}: not {earlier}; "
                             f"choose another {flag}", path=out)
    if entries and overwrite is False:
        raise AfroCometError(f"output folder already holds {earlier}; pass --overwrite or choose another {flag}",
                             path=out)
    check_writable(path)
    return path
