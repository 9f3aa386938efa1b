"""The report's efficiency table: teacher vs student as `afrocomet.bench.compare` measures them.

The run's `efficiency` block has the schema of `afrocomet.bench.efficiency` (columns `teacher` and
`student`, `ratios`, `device`, `threads`); values are read through its `MEASURES`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from afrocomet.bench.efficiency import MEASURES, value
from afrocomet.evaluate import format_table
from afrocomet.evaluate import is_number as _is_number
from afrocomet.report.fmt import _fmt_bytes, _fmt_count, _fmt_ms, _fmt_rate
from afrocomet.report.read import _get

# measure (see MEASURES), row label, formatter, (word when the ratio is >= 1, word when < 1)
EFFICIENCY: tuple[tuple[str, str, Callable[[float], str], tuple[str, str]], ...] = (
    ("parameters", "parameters", _fmt_count, ("smaller", "larger")),
    ("non_embedding_parameters", "parameters outside the embeddings", _fmt_count, ("smaller", "larger")),
    ("disk_bytes", "size on disk", _fmt_bytes, ("smaller", "larger")),
    ("memory_bytes", "peak memory", _fmt_bytes, ("smaller", "larger")),
    ("latency", "latency p50", _fmt_ms, ("faster", "slower")),
    ("latency_p95", "latency p95", _fmt_ms, ("faster", "slower")),
    ("throughput", "throughput", _fmt_rate, ("higher", "lower")),
)


def _efficiency_values(column: Any) -> dict[str, float]:
    values = {measure: value(column, measure) if isinstance(column, Mapping) else None for measure, *_ in EFFICIENCY}
    return {measure: float(v) for measure, v in values.items() if _is_number(v)}


def _ratio(eff: Mapping, measure: str, t: dict[str, float], s: dict[str, float]) -> float | None:
    """teacher/student (student/teacher where higher is better) from the values, else the run's `ratios`."""
    if t.get(measure) and s.get(measure):
        return s[measure] / t[measure] if MEASURES[measure][1] else t[measure] / s[measure]
    given = _get(eff, "ratios", measure)
    return float(given) if _is_number(given) else None


def _efficiency_rows(results: Mapping) -> dict[str, dict[str, str]]:
    """Row label -> {teacher, student, ratio} as readable strings; empty if nothing was measured."""
    eff = results.get("efficiency") or {}
    t, s = _efficiency_values(eff.get("teacher")), _efficiency_values(eff.get("student"))
    rows = {}
    for measure, label, fmt, (more, less) in EFFICIENCY:
        if measure not in t and measure not in s:
            continue
        ratio = _ratio(eff, measure, t, s)
        ratio_text = "-" if not ratio else f"{ratio:.1f}× {more}" if ratio >= 1 else f"{1 / ratio:.1f}× {less}"
        rows[label] = {"teacher": fmt(t[measure]) if measure in t else "-",
                       "student": fmt(s[measure]) if measure in s else "-", "student vs teacher": ratio_text}
        if measure == "latency_p95":
            rows.update(_interleaved_row(eff))
    return rows


def _interleaved_row(eff: Mapping) -> dict[str, dict[str, str]]:
    """`latency p50, interleaved`: the medians over the alternating rounds and the median of their ratios."""
    inter = eff.get("latency_interleaved")
    if not isinstance(inter, Mapping) or not _is_number(inter.get("ratio_median")):
        return {}

    def median(values: Any) -> str:
        numbers = sorted(float(v) for v in values or [] if _is_number(v))
        return _fmt_ms(numbers[len(numbers) // 2]) if numbers else "-"

    ratio = float(inter["ratio_median"])
    return {f"latency p50, {inter.get('rounds', '?')} interleaved rounds": {
        "teacher": median(inter.get("teacher_p50_ms")), "student": median(inter.get("student_p50_ms")),
        "student vs teacher": f"{ratio:.1f}× faster" if ratio >= 1 else f"{1 / ratio:.1f}× slower"}}


def _efficiency_section(results: Mapping) -> list[str]:
    rows = _efficiency_rows(results)
    if not rows:
        return []
    eff = results["efficiency"]
    where = ", ".join(x for x in (str(eff.get("device") or ""), f"{eff['threads']} threads" if eff.get("threads") else "",
                                  _load_text(eff.get("load"))) if x)
    note = "Latency: median and 95th percentile of one prediction call" + _latency_threads(eff) + \
        "; sizes in decimal units (1 MB = 10^6 bytes)"
    return ["## Efficiency", "", format_table(rows, ["teacher", "student", "student vs teacher"], first_column="measure"),
            note + (f"; measured on {where}." if where else "."), ""]


def _latency_threads(eff: Mapping) -> str:
    """` (each model at its faster thread count: teacher 2, student 1)` where the latencies record them."""
    counts = {name: _get(eff, name, "latency", "threads") for name in ("teacher", "student")}
    if not all(isinstance(c, int) for c in counts.values()):
        return ""
    return " (each model at its faster thread count: " + ", ".join(f"{n} {c}" for n, c in counts.items()) + ")"


def _load_text(load: Mapping | None) -> str:
    """`1-minute load 0.12 -> 0.35 on 2 cores` (and a note when it was busy), from `efficiency.load`."""
    if not isinstance(load, Mapping) or load.get("busy_cores_before") is None:
        return ""
    after = load.get("busy_cores_after") or 0.0
    text = f"cores busy with other work {load['busy_cores_before']:.2f} -> {after:.2f} of {load['cores']}"
    return text + (" (busy: the timings are unreliable)" if load.get("busy") else "")
