"""Numbers as the report prints them: percentages, bytes, counts, times, rates."""

from __future__ import annotations

import re
from typing import Any

from afrocomet.evaluate import is_number as _is_number


def _pct(value: Any, std: Any = None, digits: int = 2) -> str:
    """0.6912 -> "69.12"; with a std: "69.12 ± 1.03"; missing -> "-"."""
    if not _is_number(value):
        return "-"
    text = f"{100 * float(value):.{digits}f}"
    return f"{text} ± {100 * float(std):.{digits}f}" if _is_number(std) else text


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _fmt_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)}"


def _fmt_ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.2f} ms" if ms < 100 else f"{ms:.0f} ms"


def _fmt_rate(per_s: float) -> str:
    return f"{per_s:,.1f} texts/s" if per_s < 100 else f"{per_s:,.0f} texts/s"


def _fmt_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def _num(v: Any) -> str:
    return f"{float(v):.3g}" if _is_number(v) else "-"


def _safe_name(name: str) -> str:
    """A stage name as a file name: "stage1[kd_only]" -> "stage1_kd_only"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "stage"
