"""The report's plots (`plots/*.png`): F1 by language, confusion matrices, loss curves per stage (the
short probes of one lr or alpha search in one figure).

They use matplotlib's object API (`matplotlib.figure.Figure`), which renders with Agg and never
touches pyplot's global state or a screen. A plot that fails on odd data is skipped with a warning.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from afrocomet.evaluate import is_number as _is_number
from afrocomet.io import atomic_write_bytes
from afrocomet.report.fmt import _safe_name
from afrocomet.report.read import (
    LOSS_TERMS,
    _avg_f1,
    _get,
    _labels,
    _languages,
    _log_path,
    _loss_series,
    _system_name,
    _systems,
    read_log,
)

log = logging.getLogger("afrocomet")


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


PROBE = re.compile(r"^(lr-search|alpha-search)\[([^\]]+)\](.*)$")  # "lr-search[0.001][paper]": search, value, tag


def plot_probes(probes: Sequence[tuple[str, Sequence[dict]]], title: str, path: Path) -> Path | None:
    """One search's short probes in one figure: each candidate's total loss vs step, its dev score in the legend."""
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for i, (value, rows) in enumerate(probes):
        series = _loss_series(rows)
        if "total" not in series:
            continue
        steps, values = series["total"]
        window = max(1, len(values) // 50)
        if window > 1:
            steps, values = _smooth(steps, values, window)
        dev = [float(r["dev_score"]) for r in rows if _is_number(r.get("dev_score"))]
        ax.plot(steps, values, color=f"C{i}", linewidth=1.2,
                label=f"{value}" + (f" (dev {dev[-1]:.4f})" if dev else ""))
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("total loss")
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(4, drawn), frameon=False, fontsize="small")
    return _save(fig, path)


def _stage_plots(results: Mapping, out_dir: Path, plots_dir: Path) -> list[tuple[str, Path | None]]:
    """A loss plot per stage; the probes of one search (lr-search[*]<tag>, alpha-search[*]) share one."""
    plots, searches = [], {}
    for name, stage in (results.get("stages") or {}).items():
        log_file = _log_path(name, stage, out_dir) if isinstance(stage, Mapping) else None
        if log_file is None:
            continue
        probe = PROBE.match(name)
        if probe:
            searches.setdefault(probe.group(1) + probe.group(3), []).append((probe.group(2), read_log(log_file)))
            continue
        title = f"{name} ({stage['kind']})" if stage.get("kind") else name
        plots.append((f"Training losses, {name}", _try_plot(plot_stage_losses, read_log(log_file), title,
                                                            plots_dir / f"loss_{_safe_name(name)}.png")))
    for search, probes in searches.items():
        plots.append((f"Training losses, {search} (one probe per candidate)",
                      _try_plot(plot_probes, probes, f"{search}: one short probe per candidate",
                                plots_dir / f"loss_{_safe_name(search)}.png")))
    return plots


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
    plots += _stage_plots(results, out_dir, plots_dir)
    return [(caption, path) for caption, path in plots if path is not None]
