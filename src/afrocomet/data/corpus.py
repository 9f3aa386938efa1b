"""Unlabelled text for stage 1 and vocabulary trimming, beside the AfriSenti training text."""

from __future__ import annotations

from pathlib import Path

from afrocomet.errors import AfroCometError


def read_extra_text(paths: list[str]) -> list[str]:
    """Unlabelled text files for stage 1: UTF-8, one text per line, blank lines skipped."""
    texts: list[str] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise AfroCometError("extra text file not found", path=path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise AfroCometError(f"not UTF-8 (byte {exc.start})", path=path, line=line) from exc
        texts.extend(t for t in lines if t.strip())
    return texts
