"""The markdown of report.md: one function per section, each returning lines ([] when its data is absent)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from afrocomet.environment import describe as describe_environment
from afrocomet.evaluate import format_table
from afrocomet.evaluate import is_number as _is_number
from afrocomet.report.cite import AFRISENTI_BIBTEX, AFRISENTI_LICENCE, PAPER_BIBTEX
from afrocomet.report.efficiency import _efficiency_section
from afrocomet.report.fmt import _fmt_seconds, _num, _pct
from afrocomet.report.method import _method_section
from afrocomet.report.preparation import preparation_section, teacher_warning_lines
from afrocomet.report.teachers import group_mean, teachers_section, training_section
from afrocomet.report.read import (
    ABLATION,
    LOSS_TERMS,
    SEEN,
    UNSEEN,
    METRICS,
    _average,
    _avg_f1,
    _get,
    _is_afrisenti,
    _labels,
    _lang_name,
    _languages,
    _retention,
    _system_name,
    _systems,
)


def _run_section(results: Mapping) -> list[str]:
    config, eff = results.get("config") or {}, results.get("efficiency") or {}
    items = [("teacher", _get(config, "model", "teacher")), ("student", _get(config, "model", "student"))]
    langs = list(_languages(results)) or list(_get(config, "data", "languages") or [])
    items.append(("languages", ", ".join(_lang_name(x) for x in langs)))
    sizes = {lang: next((m["n"] for m in per.values() if _is_number(m.get("n"))), None)
             for lang, per in _languages(results).items()}
    items.append(("test examples", ", ".join(f"{lang} {n:,}" for lang, n in sizes.items() if n is not None)))
    items.append(("sampled rows", rows_text(results.get("rows"))))
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
    items.append(("environment", describe_environment(results.get("environment"))))
    lines = [f"- **{k}**: {v}" for k, v in items if v]
    return ["## What was run", "", *lines, ""] if lines else []


def rows_text(rows: Mapping | None) -> str:
    """'hau train 1,000 of 14,172, dev 300 of 2,677; ...' where data.train_rows / dev_rows cut a split."""
    if not isinstance(rows, Mapping) or not rows:
        return ""
    per = [f"{lang} " + ", ".join(f"{split} {kept:,} of {total:,}" for split, (kept, total) in splits.items())
           for lang, splits in rows.items()]
    return "; ".join(per) + " (a seeded sample, stratified by label; test sets complete)"


def _main_table(results: Mapping) -> list[str]:
    """Weighted F1 (%) per language (rows) x system (columns), avg row; best per row in bold."""
    systems, langs = _systems(results), _languages(results)
    if not systems:
        return []
    rows = {_lang_name(lang): {s: (_get(m, s, "weighted_f1"), _get(m, s, "weighted_f1_std")) for s in systems}
            for lang, m in langs.items()}
    if len(langs) != 1:  # the mean of one language is that language
        rows["**avg**"] = {s: _avg_f1(results, s) for s in systems}
    if set(SEEN + UNSEEN) <= set(langs):
        for name, group in (("seen (hau, swa)", SEEN), ("unseen (ibo, kin, yor)", UNSEEN)):
            rows[name] = {s: (group_mean(results, s, group), None) for s in systems}
    cells = {}
    for row, values in rows.items():
        best = max((float(v) for v, _ in values.values() if _is_number(v)), default=None) if len(systems) > 1 else None
        cells[row] = {_system_name(s): (f"**{_pct(v, sd)}**" if _is_number(v) and float(v) == best else _pct(v, sd))
                      for s, (v, sd) in values.items()}
    notes = [("the official AfriSenti score", _is_afrisenti(results)),
             ("mean ± std over seeds", any(sd is not None for r in rows.values() for _, sd in r.values())),
             ("avg = unweighted mean over languages", "**avg**" in rows),
             ("seen / unseen: languages in XLM-R's pretraining or not", "seen (hau, swa)" in rows),
             ("best per row in bold", len(systems) > 1)]
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
    own = results.get("retention_teacher") or "teacher"
    lines = [*teacher_warning_lines(results),
             f"**Retention** (student / its teacher, the {_system_name(own)}, ratio of the averages): {parts}."]
    per = {lang: _get(m, "student", "weighted_f1") / _get(m, own, "weighted_f1")
           for lang, m in _languages(results).items()
           if _is_number(_get(m, "student", "weighted_f1")) and _get(m, own, "weighted_f1")}
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
    return ["## Ablation", "", "Same student, data and training rule; only the loss terms differ, in stage 1 and "
            "stage 2 alike.", "", format_table(rows, list(next(iter(rows.values()))), first_column="loss terms (both stages)"),
            " ".join(text), ""]


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


def _teacher_lines(results: Mapping) -> list[str]:
    """One sentence when the teacher lacked its masked-LM head (stage 1 then ran representation-only)."""
    notes = results.get("teacher") if isinstance(results.get("teacher"), Mapping) else {}
    if notes.get("mlm_head") != "missing":
        return []
    stages = ", ".join(str(n) for n in notes.get("representation_only") or []) or "stage 1"
    return [f"**Teacher without a masked-LM head**: {stages} ran as representation-only distillation (attention "
            "matching and the student's own MLM labels, no KD on MLM logits); no randomly initialised head was "
            "used.", ""]


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
        _run_section(results), _teacher_lines(results), _main_table(results), _averages_table(results),
        _retention_lines(results), teachers_section(results), _method_section(results), training_section(results),
        _ablation_section(results), _adaptive_section(results),
        _sampling_section(results), _efficiency_section(results), preparation_section(results), _stage_table(results),
        _truncation_lines(results), _plots_section(plots, out_dir), _citation_section(results),
    ]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"
