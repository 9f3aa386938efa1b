"""The run report (`report.md` + `plots/*.png`) and the model card of the distilled student.

Everything is read from the results dict of `afrocomet run` (the content of `results.json`) and
the per-stage JSONL logs it points to. Any part may be missing (no ablations, one custom
"language", no benchmark, no logs): what is missing is left out, never guessed.

Plots use matplotlib's object API (`matplotlib.figure.Figure`), which renders with Agg and
never touches pyplot's global state or a screen.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml
from matplotlib.figure import Figure

from afrocomet.data.schema import LABELS, LANGUAGE_NAMES
from afrocomet.evaluate import format_table
from afrocomet.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger("afrocomet")

SYSTEM_NAMES: dict[str, str] = {
    "teacher": "teacher",
    "student": "student (hybrid KD)",
    "student_kd_only": "student (KD only)",
    "student_no_distill": "student (no distillation)",
    "student_adaptive": "student (adaptive weights)",
    "student_random_init": "student (random init)",
    "student_teacher_init": "student (init from teacher)",
    "tfidf_baseline": "TF-IDF + LR",
    "majority": "majority class",
}
METRICS: dict[str, str] = {"accuracy": "accuracy", "weighted_f1": "weighted F1", "macro_f1": "macro F1"}
# The ablation: the same student and budget, trained with fewer of the hybrid loss terms.
ABLATION: dict[str, str] = {
    "student": "hybrid KD (logits + attention + labels)",
    "student_kd_only": "KD only (logits + labels)",
    "student_no_distill": "no distillation (labels only)",
}
LOSS_TERMS: tuple[str, ...] = ("kd", "attention", "hard", "total")  # each keeps colour C0..C3 in every plot
LOG_META_KEYS = frozenset({"step", "epoch", "lr", "temperature", "dev_score"})
ISO_639_1: dict[str, str] = {"hau": "ha", "ibo": "ig", "kin": "rw", "swa": "sw", "yor": "yo", "pcm": "pcm"}
AFRISENTI_HF_ID = "shmuhammad/AfriSenti-twitter-sentiment"

AFRISENTI_BIBTEX = """@inproceedings{muhammad-etal-2023-afrisenti,
  title = "{A}fri{S}enti: A {T}witter Sentiment Analysis Benchmark for {A}frican Languages",
  author = "Muhammad, Shamsuddeen Hassan and Abdulmumin, Idris and Ayele, Abinew Ali and Ousidhoum, Nedjma and Adelani, David Ifeoluwa and Yimam, Seid Muhie and others",
  booktitle = "Proceedings of the 2023 Conference on Empirical Methods in Natural Language Processing",
  year = "2023",
  address = "Singapore",
  publisher = "Association for Computational Linguistics",
  url = "https://aclanthology.org/2023.emnlp-main.862",
  doi = "10.18653/v1/2023.emnlp-main.862",
  pages = "13968--13981"
}"""
PAPER_BIBTEX = """@misc{raju2025afroxlmrcomet,
  title = {{AfroXLMR-Comet}: Multilingual Knowledge Distillation with Attention Matching for Low-Resource languages},
  author = {Raju, Joshua Sakthivel and S, Sanjay and Walia, Jaskaran Singh and Raghav, Srinivas and Marivate, Vukosi},
  year = {2025},
  eprint = {2502.18020},
  archivePrefix = {arXiv},
  primaryClass = {cs.CL},
  url = {https://arxiv.org/abs/2502.18020}
}"""
AFRISENTI_LICENCE = (
    "Data: AfriSenti-SemEval 2023 (task A), licensed CC BY 4.0 "
    "(https://github.com/afrisenti-semeval/afrisent-semeval-2023); cite Muhammad et al. (2023), "
    "\"AfriSenti: A Twitter Sentiment Analysis Benchmark for African Languages\", EMNLP 2023."
)


# ---------------------------------------------------------------------------------------------
# Reading the results dict
# ---------------------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _get(d: Any, *keys: str) -> Any:
    """`d[k1][k2]...`, or None where any level is missing or not a mapping."""
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _languages(results: Mapping) -> dict[str, dict[str, dict]]:
    """language -> system -> metrics, keeping only well-formed entries."""
    langs = results.get("languages") or {}
    return {lang: {s: m for s, m in per.items() if isinstance(m, Mapping)}
            for lang, per in langs.items() if isinstance(per, Mapping)}


def _systems(results: Mapping) -> list[str]:
    """Systems with any numbers, in the run's order (then first seen)."""
    seen = [s for s in results.get("systems") or [] if isinstance(s, str)]
    for per in _languages(results).values():
        seen += [s for s in per if s not in seen]
    seen += [s for s in results.get("average") or {} if s not in seen]
    return [s for s in seen if _average(results, s) or any(s in per for per in _languages(results).values())]


def _average(results: Mapping, system: str) -> dict[str, float]:
    """The run's average for `system`; a missing metric is the unweighted mean over languages."""
    given = _get(results, "average", system)
    out = {k: float(v) for k, v in (given or {}).items() if _is_number(v)}
    per = [m[system] for m in _languages(results).values() if system in m]
    for key in METRICS:
        values = [float(m[key]) for m in per if _is_number(m.get(key))]
        if key not in out and values and len(values) == len(per):
            out[key] = float(np.mean(values))
    return out


def _avg_f1(results: Mapping, system: str) -> tuple[float | None, float | None]:
    """(average weighted F1, its seed std) of `system`; None where absent."""
    avg = _average(results, system)
    return avg.get("weighted_f1"), avg.get("weighted_f1_std")


def _retention(results: Mapping) -> dict[str, float]:
    """student / teacher per averaged metric: the run's numbers, else computed from the averages."""
    given = {k: float(v) for k, v in (results.get("retention") or {}).items() if _is_number(v)}
    if given:
        return given
    s, t = _average(results, "student"), _average(results, "teacher")
    return {k: s[k] / t[k] for k in METRICS if k in s and t.get(k)}


def _labels(results: Mapping, size: int | None = None) -> list[str]:
    labels = [str(x) for x in results.get("labels") or LABELS]
    if size is not None and len(labels) != size:
        return [str(i) for i in range(size)]
    return labels


def _lang_name(code: str) -> str:
    return f"{LANGUAGE_NAMES[code]} ({code})" if code in LANGUAGE_NAMES else code


def _system_name(system: str) -> str:
    return SYSTEM_NAMES.get(system, system)


def _is_afrisenti(results: Mapping) -> bool:
    langs = list(_languages(results)) or list(_get(results, "config", "data", "languages") or [])
    return not langs or any(lang in LANGUAGE_NAMES for lang in langs)


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Efficiency (accepts the flat keys of results.json and the nested ones of `bench.compare`)
# ---------------------------------------------------------------------------------------------

# key, row label, formatter, (word when ratio >= 1, word when < 1), student/teacher ratio?
EFFICIENCY: tuple[tuple[str, str, Callable[[float], str], tuple[str, str], bool], ...] = (
    ("parameters", "parameters", _fmt_count, ("smaller", "larger"), False),
    ("disk_bytes", "size on disk", _fmt_bytes, ("smaller", "larger"), False),
    ("peak_memory_bytes", "peak memory", _fmt_bytes, ("smaller", "larger"), False),
    ("latency_ms_p50", "latency p50", _fmt_ms, ("faster", "slower"), False),
    ("latency_ms_p95", "latency p95", _fmt_ms, ("faster", "slower"), False),
    ("texts_per_s", "throughput", _fmt_rate, ("higher", "lower"), True),
)
_ALIASES = {"latency_ms_p50": ("latency", "p50_ms"), "latency_ms_p95": ("latency", "p95_ms"),
            "texts_per_s": ("throughput", "texts_per_s"), "peak_memory_bytes": ("memory_bytes",)}
_RATIO_ALIASES = {"latency_ms_p50": "latency", "latency_ms_p95": "latency_p95", "texts_per_s": "throughput",
                  "peak_memory_bytes": "memory_bytes"}


def _efficiency_values(entry: Any) -> dict[str, float]:
    out = {}
    for key, *_ in EFFICIENCY:
        v = _get(entry, key)
        if v is None and key in _ALIASES:
            v = _get(entry, *_ALIASES[key])
        if _is_number(v):
            out[key] = float(v)
    return out


def _ratio(eff: Mapping, key: str, t: dict[str, float], s: dict[str, float], inverse: bool) -> float | None:
    """teacher/student (student/teacher for throughput) from the values, else the run's `ratios`."""
    if t.get(key) and s.get(key):
        return s[key] / t[key] if inverse else t[key] / s[key]
    for name in (key, _RATIO_ALIASES.get(key)):
        if name and _is_number(_get(eff, "ratios", name)):
            return float(_get(eff, "ratios", name))
    return None


def _efficiency_rows(results: Mapping) -> dict[str, dict[str, str]]:
    """Row label -> {teacher, student, ratio} as readable strings; empty if nothing was measured."""
    eff = results.get("efficiency") or {}
    t, s = _efficiency_values(eff.get("teacher")), _efficiency_values(eff.get("student"))
    rows = {}
    for key, label, fmt, (more, less), inverse in EFFICIENCY:
        if key not in t and key not in s:
            continue
        ratio = _ratio(eff, key, t, s, inverse)
        ratio_text = "-" if not ratio else f"{ratio:.1f}× {more}" if ratio >= 1 else f"{1 / ratio:.1f}× {less}"
        rows[label] = {"teacher": fmt(t[key]) if key in t else "-", "student": fmt(s[key]) if key in s else "-",
                       "student vs teacher": ratio_text}
    return rows


# ---------------------------------------------------------------------------------------------
# Stage logs
# ---------------------------------------------------------------------------------------------


def read_log(path: str | Path) -> list[dict]:
    """The records of a stage's JSONL log; lines that are not JSON objects with a step are skipped
    (an interrupted run leaves a half-written last line). A missing file gives []."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and _is_number(row.get("step")):
            rows.append(row)
    return rows


def _log_path(name: str, stage: Mapping, out_dir: Path) -> Path | None:
    """The stage's log: its `log` entry (relative to out_dir, or absolute), else logs/<name>/log.jsonl."""
    candidates = []
    if isinstance(stage.get("log"), str) and stage["log"]:
        candidates.append(out_dir / stage["log"])  # an absolute `log` stays absolute
    candidates.append(out_dir / "logs" / name / "log.jsonl")
    return next((p for p in candidates if p.is_file()), None)


def _loss_series(rows: Sequence[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """term -> (steps, values) for every loss term in the training lines of a log."""
    train = [r for r in rows if "dev_score" not in r]
    names = [t for t in LOSS_TERMS if any(t in r for r in train)]
    names += sorted({k for r in train for k, v in r.items() if k not in LOG_META_KEYS and _is_number(v)} - set(names))
    series = {}
    for name in names:
        pairs = [(float(r["step"]), float(r[name])) for r in train if _is_number(r.get(name))]
        if pairs:
            steps, values = np.array(pairs).T  # [2, n]
            series[name] = (steps, values)
    return series


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    return atomic_write_bytes(path, buf.getvalue())


def plot_f1_by_language(results: Mapping, path: Path) -> Path | None:
    """Grouped bars: languages (and "avg") on x, one bar per system; seed std as error bars."""
    systems, langs = _systems(results), _languages(results)
    groups = [(lang, {s: (_get(m, s, "weighted_f1"), _get(m, s, "weighted_f1_std")) for s in systems})
              for lang, m in langs.items()]
    if len(langs) != 1:  # the mean of one language is that language
        groups.append(("avg", {s: _avg_f1(results, s) for s in systems}))
    if not systems or not any(_is_number(v) for _, g in groups for v, _ in g.values()):
        return None
    width_in = min(12.0, max(6.0, 1.0 + len(groups) * (0.3 * len(systems) + 0.4)))
    fig = Figure(figsize=(width_in, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x, width = np.arange(len(groups)), 0.8 / len(systems)
    for i, s in enumerate(systems):
        values = [100 * float(g[s][0]) if _is_number(g[s][0]) else np.nan for _, g in groups]
        errors = [100 * float(g[s][1]) if _is_number(g[s][1]) else 0.0 for _, g in groups]
        ax.bar(x + (i - (len(systems) - 1) / 2) * width, values, width, label=_system_name(s), color=f"C{i}",
               yerr=errors if any(errors) else None, capsize=2)
    if len(groups) > 1:
        ax.axvline(len(groups) - 1.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x, [name for name, _ in groups])
    ax.set_ylabel("weighted F1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(3, len(systems)), frameon=False, fontsize="small")
    return _save(fig, path)


def _smooth(steps: np.ndarray, values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Moving average over `window` points (steps at the window ends)."""
    kernel = np.ones(window) / window
    return steps[window - 1:], np.convolve(values, kernel, mode="valid")


def plot_stage_losses(rows: Sequence[dict], title: str, path: Path) -> Path | None:
    """One line per loss term vs step (log y when their ranges differ a lot); dev scores on a twin axis."""
    series = _loss_series(rows)
    if not series:
        return None
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, (steps, values)) in enumerate(series.items()):
        color = f"C{LOSS_TERMS.index(name) if name in LOSS_TERMS else len(LOSS_TERMS) + i}"
        window = max(1, len(values) // 50)
        if window > 1:
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            steps, values = _smooth(steps, values, window)
        ax.plot(steps, values, color=color, label=name, linewidth=1.6 if name == "total" else 1.2)
    everything = np.concatenate([v for _, v in series.values()])
    if np.all(everything > 0) and everything.max() / everything.min() > 30:
        ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    fig.suptitle(title, fontsize=11)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    dev = [(float(r["step"]), float(r["dev_score"])) for r in rows if _is_number(r.get("dev_score"))]
    if dev:
        ax2 = ax.twinx()
        steps, scores = np.array(dev).T
        line, = ax2.plot(steps, scores, "o--", color="black", markersize=4, linewidth=0.8, label="dev score")
        ax2.set_ylabel("dev score")
        handles, labels = handles + [line], labels + ["dev score"]
    ax.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(labels), frameon=False,
              fontsize="small")
    return _save(fig, path)


def _summed_confusion(results: Mapping, system: str) -> tuple[np.ndarray, list[str]] | None:
    """The confusion matrix of `system` summed over languages, and the languages it covers."""
    total, used = None, []
    for lang, per in _languages(results).items():
        cm = _get(per, system, "confusion_matrix")
        try:
            cm = np.asarray(cm, dtype=np.int64)
        except (TypeError, ValueError):
            continue
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.size == 0 or (total is not None and cm.shape != total.shape):
            continue
        total = cm if total is None else total + cm
        used.append(lang)
    return None if total is None else (total, used)


def plot_confusion(results: Mapping, system: str, path: Path) -> Path | None:
    """Row-normalised confusion matrix (true x predicted) summed over languages, with counts."""
    found = _summed_confusion(results, system)
    if found is None:
        return None
    cm, langs = found  # [k, k]
    labels = _labels(results, cm.shape[0])
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(4.8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.0%}\n{cm[i, j]:,}", ha="center", va="center", fontsize=9,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    where = langs[0] if len(langs) == 1 else f"{len(langs)} languages"
    ax.set_title(f"{_system_name(system)}, {where}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    return _save(fig, path)


def _try_plot(plot: Callable[..., Path | None], *args: Any) -> Path | None:
    """A plot that fails on odd data is skipped with a warning: the run's report must still appear."""
    try:
        return plot(*args)
    except Exception as exc:  # noqa: BLE001 - a figure is never worth losing the report of a long run
        log.warning("plot %s skipped: %s: %s", Path(args[-1]).name, type(exc).__name__, exc)
        return None


def write_plots(results: Mapping, out_dir: Path) -> list[tuple[str, Path]]:
    """Every plot the results allow, as (caption, path) pairs; paths under out_dir/plots."""
    plots_dir = out_dir / "plots"
    plots = [("Weighted F1 by language and system", _try_plot(plot_f1_by_language, results,
                                                               plots_dir / "weighted_f1_by_language.png"))]
    for system in ("teacher", "student"):
        plots.append((f"Confusion matrix, {_system_name(system)}",
                      _try_plot(plot_confusion, results, system, plots_dir / f"confusion_{system}.png")))
    for name, stage in (results.get("stages") or {}).items():
        log_file = _log_path(name, stage, out_dir) if isinstance(stage, Mapping) else None
        if log_file is not None:
            title = f"{name} ({stage['kind']})" if stage.get("kind") else name
            plots.append((f"Training losses, {name}", _try_plot(plot_stage_losses, read_log(log_file), title,
                                                                plots_dir / f"loss_{_safe_name(name)}.png")))
    return [(caption, path) for caption, path in plots if path is not None]


# ---------------------------------------------------------------------------------------------
# Report sections (each returns markdown lines; [] when its data is absent)
# ---------------------------------------------------------------------------------------------


def _run_section(results: Mapping) -> list[str]:
    config, eff = results.get("config") or {}, results.get("efficiency") or {}
    items = [("teacher", _get(config, "model", "teacher")), ("student", _get(config, "model", "student"))]
    langs = list(_languages(results)) or list(_get(config, "data", "languages") or [])
    items.append(("languages", ", ".join(_lang_name(x) for x in langs)))
    sizes = {lang: next((m["n"] for m in per.values() if _is_number(m.get("n"))), None)
             for lang, per in _languages(results).items()}
    items.append(("test examples", ", ".join(f"{lang} {n:,}" for lang, n in sizes.items() if n is not None)))
    items.append(("labels", ", ".join(_labels(results))))
    stages = [name for name, s in (results.get("stages") or {}).items() if isinstance(s, Mapping)]
    items.append(("stages", " → ".join(stages)))
    items.append(("seeds", ", ".join(str(s) for s in results.get("seeds") or [])))
    device = eff.get("device") or _get(config, "device")
    items.append(("device", f"{device}" + (f", {eff['threads']} threads" if eff.get("threads") else "") if device else ""))
    wall = results.get("wall_seconds")
    items.append(("total wall time", _fmt_seconds(float(wall)) if _is_number(wall) else ""))
    version, created = results.get("afrocomet_version"), results.get("created")
    items.append(("afrocomet", " ".join(x for x in (str(version or ""), f"({created})" if created else "") if x)))
    lines = [f"- **{k}**: {v}" for k, v in items if v]
    return ["## What was run", "", *lines, ""] if lines else []


def _main_table(results: Mapping) -> list[str]:
    """Weighted F1 (%) per language (rows) x system (columns), avg row; best per row in bold."""
    systems, langs = _systems(results), _languages(results)
    if not systems:
        return []
    rows = {_lang_name(lang): {s: (_get(m, s, "weighted_f1"), _get(m, s, "weighted_f1_std")) for s in systems}
            for lang, m in langs.items()}
    if len(langs) != 1:  # the mean of one language is that language
        rows["**avg**"] = {s: _avg_f1(results, s) for s in systems}
    cells = {}
    for row, values in rows.items():
        best = max((float(v) for v, _ in values.values() if _is_number(v)), default=None) if len(systems) > 1 else None
        cells[row] = {_system_name(s): (f"**{_pct(v, sd)}**" if _is_number(v) and float(v) == best else _pct(v, sd))
                      for s, (v, sd) in values.items()}
    notes = [("the official AfriSenti score", _is_afrisenti(results)),
             ("mean ± std over seeds", any(sd is not None for r in rows.values() for _, sd in r.values())),
             ("avg = unweighted mean over languages", "**avg**" in rows), ("best per row in bold", len(systems) > 1)]
    caption = "Weighted F1 (%) on the test sets" + "".join(f"; {text}" for text, shown in notes if shown) + "."
    return ["## Results", "", caption, "", format_table(cells, [_system_name(s) for s in systems], first_column="language")]


def _averages_table(results: Mapping) -> list[str]:
    rows = {}
    for s in _systems(results):
        avg = _average(results, s)
        if any(k in avg for k in METRICS):
            rows[_system_name(s)] = {name: _pct(avg.get(k), avg.get(f"{k}_std")) for k, name in METRICS.items()}
    if not rows:
        return []
    return ["Averages over languages (%):", "", format_table(rows, list(METRICS.values()))]


def _retention_lines(results: Mapping) -> list[str]:
    ret = _retention(results)
    if not ret:
        return []
    ordered = sorted(ret.items(), key=lambda kv: kv[0] != "weighted_f1")  # the official score first
    parts = ", ".join(f"{METRICS.get(k, k)} {100 * v:.1f}%" for k, v in ordered)
    lines = [f"**Retention** (student / teacher, ratio of the averages): {parts}."]
    per = {lang: _get(m, "student", "weighted_f1") / _get(m, "teacher", "weighted_f1")
           for lang, m in _languages(results).items()
           if _is_number(_get(m, "student", "weighted_f1")) and _get(m, "teacher", "weighted_f1")}
    if len(per) > 1:
        lines.append("Per language (weighted F1): " + ", ".join(f"{lang} {100 * r:.1f}%" for lang, r in per.items()) + ".")
    return [*lines, ""]


def _ablation_section(results: Mapping) -> list[str]:
    """Hybrid vs KD-only vs no distillation: which won on average, by how much, on how many languages."""
    avg = {s: _average(results, s).get("weighted_f1") for s in ABLATION}
    avg = {s: v for s, v in avg.items() if v is not None}
    if len(avg) < 2:
        return []
    ranked = sorted(avg, key=avg.get, reverse=True)
    best = ranked[0]
    delta = f"Δ vs {_system_name(best)}"
    rows = {ABLATION[s]: {"avg weighted F1": _pct(avg[s]), delta: f"{100 * (avg[s] - avg[best]):+.2f}"} for s in ranked}
    gap = 100 * (avg[best] - avg[ranked[1]])
    text = [f"Best on average: **{ABLATION[best]}**, {gap:.2f} points above {ABLATION[ranked[1]]}."]
    for other in ranked[1:]:
        wins = [lang for lang, m in _languages(results).items()
                if _is_number(_get(m, best, "weighted_f1")) and _is_number(_get(m, other, "weighted_f1"))
                and _get(m, best, "weighted_f1") > _get(m, other, "weighted_f1")]
        total = sum(1 for m in _languages(results).values() if best in m and other in m)
        if total:
            text.append(f"It beats {ABLATION[other]} on {len(wins)} of {total} languages.")
    std = _average(results, best).get("weighted_f1_std")
    if _is_number(std):
        verdict = "larger" if gap > 100 * std else "not larger"
        text.append(f"The gap to the runner-up is {verdict} than the seed std of the winner ({100 * std:.2f}).")
    return ["## Ablation", "", "Same student, data and step budget; only the loss terms differ.", "",
            format_table(rows, list(next(iter(rows.values()))), first_column="stage-2 loss"), " ".join(text), ""]


def _best_dev(results: Mapping, tag: str) -> float | None:
    """Dev score of the last task stage of one student variant (its stage names end in `tag`)."""
    stages = [s for name, s in (results.get("stages") or {}).items()
              if isinstance(s, Mapping) and s.get("kind") == "distill-task" and name.endswith(tag)
              and (tag or "[" not in name)]
    return stages[-1].get("best_score") if stages else None


def _adaptive_section(results: Mapping) -> list[str]:
    """Fixed vs adaptive loss weights: which won on dev (the rule that sets the default) and on test."""
    fixed, adaptive = _average(results, "student").get("weighted_f1"), _average(results, "student_adaptive").get("weighted_f1")
    if fixed is None or adaptive is None:
        return []
    mode = _get(results, "config", "compare_adaptive") or "adaptive"
    dev = {"fixed": _best_dev(results, ""), "adaptive": _best_dev(results, "[adaptive]")}
    rows = {"fixed weights (default)": {"dev weighted F1": _pct(dev["fixed"]), "test weighted F1": _pct(fixed)},
            f"adaptive ({mode})": {"dev weighted F1": _pct(dev["adaptive"]), "test weighted F1": _pct(adaptive)}}
    text = []
    if _is_number(dev["fixed"]) and _is_number(dev["adaptive"]):
        won = "adaptive" if dev["adaptive"] > dev["fixed"] else "fixed"
        text.append(f"On dev, **{won} weights won** ({100 * (dev['adaptive'] - dev['fixed']):+.2f} points for adaptive); "
                    f"on test adaptive is {100 * (adaptive - fixed):+.2f} points.")
        text.append("Fixed weights stay the default until runs like this one show adaptive winning on dev.")
    return ["## Fixed vs adaptive loss weights", "",
            "Same student, data and budget; the hybrid loss terms balanced by fixed weights or adaptively.", "",
            format_table(rows, ["dev weighted F1", "test weighted F1"], first_column="loss weights"), " ".join(text), ""]


def _sampling_section(results: Mapping) -> list[str]:
    """Which language-sampling alpha the task stages used, and the dev scores it was chosen on."""
    sampling = results.get("sampling") or {}
    alpha, search = sampling.get("alpha"), sampling.get("search")
    if not _is_number(alpha):
        return []
    if sampling.get("per_language"):
        return ["## Language sampling", "", "One student per language: no sampling across languages.", ""]
    if not search:
        return ["## Language sampling", "", f"Training examples drawn per language with p ∝ n^α, α = {alpha:g} "
                "(fixed: `data.sampling_alpha`; set `data.alpha_candidates` to choose it on dev).", ""]
    rows = {(f"**{a}**" if float(a) == float(alpha) else a): {"dev weighted F1": _pct(v)}
            for a, v in search["dev_weighted_f1"].items()}
    return ["## Language sampling", "",
            f"Training examples drawn per language with p ∝ n^α. α = **{alpha:g}** was chosen on dev: a "
            f"{search['steps']}-step copy of {search['stage']} per candidate, from the same stage-1 student.", "",
            format_table(rows, ["dev weighted F1"], first_column="α"), ""]


def _efficiency_section(results: Mapping) -> list[str]:
    rows = _efficiency_rows(results)
    if not rows:
        return []
    eff = results["efficiency"]
    where = ", ".join(x for x in (str(eff.get("device") or ""), f"{eff['threads']} threads" if eff.get("threads") else "") if x)
    note = "Latency: median and 95th percentile of one prediction call; sizes in decimal units (1 MB = 10^6 bytes)"
    return ["## Efficiency", "", format_table(rows, ["teacher", "student", "student vs teacher"], first_column="measure"),
            note + (f"; measured on {where}." if where else "."), ""]


def _stage_row(s: Mapping) -> dict[str, str]:
    """One row of the stage table: budget, time, best dev score and each loss term first -> last."""
    terms = s.get("terms") if isinstance(s.get("terms"), Mapping) else {}
    ordered = sorted(terms, key=lambda t: (LOSS_TERMS + (t,)).index(t))  # kd, attention, hard, total, others
    losses = ", ".join(f"{t} {_num(_get(terms, t, 'first'))} → {_num(_get(terms, t, 'last'))}" for t in ordered)
    steps = f"{int(s['steps']):,}" if _is_number(s.get("steps")) else "-"
    best = f"{s['best_score']:.4g} @ {s.get('best_step', '?')}" if _is_number(s.get("best_score")) else "-"
    return {"kind": str(s.get("kind") or "-"), "steps": steps + (" (early stop)" if s.get("stopped_early") else ""),
            "epochs": _num(s.get("epochs")),
            "time": _fmt_seconds(float(s["seconds"])) if _is_number(s.get("seconds")) else "-",
            "best dev @ step": best, "loss first → last": losses or "-"}


def _stage_table(results: Mapping) -> list[str]:
    stages = {n: s for n, s in (results.get("stages") or {}).items() if isinstance(s, Mapping)}
    if not stages:
        return []
    rows = {name: _stage_row(s) for name, s in stages.items()}
    total = sum(float(s["seconds"]) for s in stages.values() if _is_number(s.get("seconds")))
    return ["## Training stages", "", format_table(rows, list(next(iter(rows.values()))), first_column="stage"),
            f"Training time over all stages: {_fmt_seconds(total)}. Loss values are means over a window "
            "at the start and the end of each stage; the dev score of masked-LM stages is minus the MLM loss.", ""]


def _truncation_lines(results: Mapping) -> list[str]:
    counts = {k: int(v) for k, v in (results.get("truncated") or {}).items() if _is_number(v)}
    if not counts:
        return []
    max_length = _get(results, "config", "data", "max_length")
    limit = f" (longer than {max_length} tokens)" if max_length else ""
    return [f"**Truncated test texts**{limit}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
            + f"; {sum(counts.values()):,} in all.", ""]


def _plots_section(plots: Sequence[tuple[str, Path]], out_dir: Path) -> list[str]:
    if not plots:
        return []
    lines = ["## Plots", ""]
    for caption, path in plots:
        alt = caption.replace("[", "\\[").replace("]", "\\]")  # stage names like "stage1[kd_only]"
        lines += [f"![{alt}]({path.relative_to(out_dir).as_posix()})", ""]
    return lines


def _citation_section(results: Mapping) -> list[str]:
    afrisenti = _is_afrisenti(results)
    data = AFRISENTI_LICENCE if afrisenti else \
        "Data: user-supplied files; their licence and citation are the user's to state."
    bibtex = [AFRISENTI_BIBTEX, "", PAPER_BIBTEX] if afrisenti else [PAPER_BIBTEX]
    return ["## Data licence and citation", "", data,
            "Method: hybrid knowledge distillation after Raju et al. (2025), AfroXLMR-Comet, arXiv:2502.18020.", "",
            "```bibtex", *bibtex, "```", ""]


def render_report(results: Mapping, plots: Sequence[tuple[str, Path]] = (), out_dir: Path = Path(".")) -> str:
    """The markdown of report.md (plots are linked relative to out_dir)."""
    teacher, student = _get(results, "config", "model", "teacher"), _get(results, "config", "model", "student")
    title = f"# afrocomet run: {teacher} → {student}" if teacher and student else "# afrocomet run report"
    sections = [
        [title, "", "Hybrid knowledge distillation (logit KD + attention matching + labels; AfroXLMR-Comet, "
         f"arXiv:2502.18020) evaluated on {'AfriSenti' if _is_afrisenti(results) else 'user-supplied'} sentiment "
         f"data ({' / '.join(_labels(results))}).", ""],
        _run_section(results), _main_table(results), _averages_table(results), _retention_lines(results),
        _ablation_section(results), _adaptive_section(results), _sampling_section(results),
        _efficiency_section(results), _stage_table(results),
        _truncation_lines(results), _plots_section(plots, out_dir), _citation_section(results),
    ]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"


def write_report(results: dict, out_dir: Path) -> Path:
    """Write out_dir/report.md and out_dir/plots/*.png from a run's results; returns report.md."""
    out_dir = Path(out_dir)
    plots = write_plots(results, out_dir)
    return atomic_write_text(out_dir / "report.md", render_report(results, plots, out_dir))


# ---------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------


def _front_matter(results: Mapping, system: str, name: str) -> str:
    langs = [lang for lang in _languages(results) if lang in ISO_639_1]
    meta: dict[str, Any] = {}
    if langs:
        meta["language"] = [ISO_639_1[lang] for lang in langs]
    meta.update({"license": "apache-2.0", "library_name": "transformers", "pipeline_tag": "text-classification",
                 "tags": ["sentiment-analysis", "knowledge-distillation", "african-languages", "afrisenti", "afrocomet"]})
    if _is_afrisenti(results):
        meta["datasets"] = [AFRISENTI_HF_ID]
    meta["metrics"] = ["f1", "accuracy"]
    entries = []
    for lang in langs:
        m = _get(results, "languages", lang, system) or {}
        scores = [{"type": t, "name": n, "value": round(100 * float(m[k]), 2)} if _is_number(m.get(k)) else None
                  for k, t, n in (("weighted_f1", "f1", "weighted F1"), ("accuracy", "accuracy", "accuracy"))]
        scores = [x for x in scores if x is not None]
        if scores:
            entries.append({"task": {"type": "text-classification", "name": "Sentiment analysis"},
                            "dataset": {"name": f"AfriSenti ({LANGUAGE_NAMES[lang]})", "type": AFRISENTI_HF_ID,
                                        "config": lang, "split": "test"}, "metrics": scores})
    if entries:
        meta["model-index"] = [{"name": name, "results": entries}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _card_results(results: Mapping, system: str) -> list[str]:
    """Per-language weighted F1 of this model, the teacher, retention and the TF-IDF baseline."""
    langs = _languages(results)
    rows = {}
    scores = {_lang_name(lang): {s: _get(m, s, "weighted_f1") for s in (system, "teacher", "tfidf_baseline")}
              for lang, m in langs.items()}
    scores["**avg**"] = {s: _average(results, s).get("weighted_f1") for s in (system, "teacher", "tfidf_baseline")}
    for row, v in scores.items():
        own, teacher = v[system], v["teacher"]
        rows[row] = {"this model": _pct(own), "teacher": _pct(teacher),
                     "retention": f"{100 * own / teacher:.1f}%" if _is_number(own) and _is_number(teacher) and teacher
                     else "-",
                     "TF-IDF + LR": _pct(v["tfidf_baseline"])}
    columns = [c for c in ("this model", "teacher", "retention", "TF-IDF + LR") if any(r[c] != "-" for r in rows.values())]
    if not columns:
        return ["No evaluation results were recorded for this model.", ""]
    return ["Weighted F1 (%) on the AfriSenti test sets; retention = this model / teacher.", "",
            format_table(rows, columns, first_column="language")]


def _card_method(results: Mapping) -> list[str]:
    stages = {s.get("name"): s for s in _get(results, "config", "stages") or [] if isinstance(s, Mapping)}
    lines = []
    for name, done in (results.get("stages") or {}).items():
        if not isinstance(done, Mapping) or "[" in name:
            continue  # ablation copies are not part of this model's recipe
        cfg = stages.get(name, {})
        distill = str(done.get("kind") or "").startswith("distill")
        weights = ", ".join(f"{k.removesuffix('_weight')} {cfg[k]:g}" for k in ("kd_weight", "attention_weight", "hard_weight")
                            if distill and _is_number(cfg.get(k)))
        extra = f"; loss weights {weights}" if weights else ""
        extra += f", T = {cfg['temperature']:g}" if weights and _is_number(cfg.get("temperature")) else ""
        lines.append(f"- `{name}` ({done.get('kind') or '?'}): {done.get('steps', '?')} steps{extra}")
    sampling = results.get("sampling") or {}
    alpha, search = sampling.get("alpha"), sampling.get("search")
    if _is_number(alpha) and not sampling.get("per_language"):
        how = (f"chosen on dev among {', '.join(search['dev_weighted_f1'])} ({search['steps']}-step probes of "
               f"`{search['stage']}`)" if isinstance(search, Mapping) and search.get("dev_weighted_f1") else "fixed")
        lines.append(f"- training tweets drawn per language with p ∝ n^α, α = {alpha:g}, {how}")
    return lines


def _weakest(results: Mapping, system: str) -> list[str]:
    """Limitations read off the numbers: the weakest language and class."""
    per = {lang: m[system] for lang, m in _languages(results).items() if system in m}
    f1 = {lang: float(m["weighted_f1"]) for lang, m in per.items() if _is_number(m.get("weighted_f1"))}
    classes: dict[str, list[float]] = {}
    for m in per.values():
        for label, v in (m.get("per_class_f1") or {}).items():
            if _is_number(v):
                classes.setdefault(label, []).append(float(v))
    lines = []
    if len(f1) > 1:
        lang = min(f1, key=f1.get)
        lines.append(f"- Quality differs by language: the weakest is {_lang_name(lang)} ({_pct(f1[lang])} weighted F1).")
    if classes:
        label = min(classes, key=lambda k: np.mean(classes[k]))
        lines.append(f"- The hardest class is *{label}* (mean F1 {_pct(np.mean(classes[label]))} over languages).")
    return lines


def _card_summary(results: Mapping, system: str, langs: list[str]) -> str:
    teacher = _get(results, "config", "model", "teacher") or "a larger teacher"
    text = (f"A small sentiment classifier ({' / '.join(_labels(results))}) for tweets in {', '.join(langs)}, "
            f"distilled from `{teacher}` with afrocomet's hybrid knowledge distillation (AfroXLMR-Comet, arXiv:2502.18020).")
    if system != "student":
        return text + f" This card describes the ablation `{system}`: {ABLATION.get(system, 'not the main student')}."
    eff = _efficiency_rows(results)
    params, ratio = _get(eff, "parameters", "student"), _get(eff, "parameters", "student vs teacher")
    if params not in (None, "-"):
        text += f" It has {params} parameters" + (f" ({ratio} than the teacher)." if ratio not in (None, "-") else ".")
    ret = _retention(results).get("weighted_f1")
    return text + (f" It keeps {100 * ret:.1f}% of the teacher's average weighted F1." if ret else "")


def _card_usage(max_length: int) -> list[str]:
    return ["## How to use", "", "```python", "import torch",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
            'path = "student"  # this folder, or its id on the Hugging Face Hub',
            "tokenizer = AutoTokenizer.from_pretrained(path)",
            "model = AutoModelForSequenceClassification.from_pretrained(path).eval()", "",
            'texts = ["Nimefurahi sana leo!", "Huduma yao ni mbaya sana."]',
            f'batch = tokenizer(texts, padding=True, truncation=True, max_length={max_length}, return_tensors="pt")',
            "with torch.inference_mode():", "    probs = model(**batch).logits.softmax(-1)  # [n_texts, n_labels]",
            "print([model.config.id2label[i] for i in probs.argmax(-1).tolist()])", "```", ""]


def _card_limitations(results: Mapping, system: str, langs: list[str], max_length: int) -> list[str]:
    return ["## Intended use and limitations", "",
            f"- Intended for research and for lightweight sentiment analysis of tweets in {', '.join(langs)}.",
            "- Trained on tweets only: expect lower quality on other domains, other languages and long texts "
            f"(inputs are truncated to {max_length} tokens).",
            *_weakest(results, system),
            "- Labels come from annotators' judgements with real disagreement; the data reflects the topics and "
            "biases of Twitter users in 2022-2023. Do not use it for decisions about individuals or for moderation "
            "without human review.", ""]


def model_card(results: dict, system: str = "student") -> str:
    """The Hugging Face model card (README.md with YAML front matter) of a run's `system`."""
    student = _get(results, "config", "model", "student") or system
    name = f"afrocomet-{_safe_name(str(student))}" + ("" if system == "student" else f"-{_safe_name(system)}")
    langs = [_lang_name(x) for x in _languages(results)] or ["the run's languages"]
    max_length = _get(results, "config", "data", "max_length") or 128
    afrisenti = _is_afrisenti(results)
    eff = _efficiency_rows(results) if system == "student" else {}  # measured for the student only
    parts = [
        [_front_matter(results, system, name), f"# {name}", "", _card_summary(results, system, langs), ""],
        ["## Training data", "", "AfriSenti-SemEval 2023 task A (monolingual Twitter sentiment; train split for "
         "training, dev for model selection, test for the numbers below)." if afrisenti
         else "User-supplied labelled TSV files.", ""],
        ["## Method", "", "Hybrid knowledge distillation: temperature-scaled KL between teacher and student logits "
         "(×T²), matching of mean-pooled attention maps of mapped layers, and cross-entropy on gold labels; first "
         "task-agnostic on masked-LM text, then on the sentiment task. Stages of the run (teacher preparation "
         "included):", "", *_card_method(results), ""],
        ["## Evaluation", "", *_card_results(results, system), *(_retention_lines(results) if system == "student" else [])],
        ["## Efficiency", "", format_table(eff, ["teacher", "student", "student vs teacher"], first_column="measure")]
        if eff else [],
        _card_usage(max_length),
        _card_limitations(results, system, langs, max_length),
        ["## License", "", "Model weights: Apache-2.0. " + ("Training data: AfriSenti, CC BY 4.0 (attribution: "
                                                             "Muhammad et al., 2023)." if afrisenti else
                                                             "Training data: see its own licence."), ""],
        ["## Citation", "", "```bibtex", *([AFRISENTI_BIBTEX, ""] if afrisenti else []), PAPER_BIBTEX, "```"],
    ]
    return "\n".join(line for part in parts for line in part).rstrip() + "\n"
