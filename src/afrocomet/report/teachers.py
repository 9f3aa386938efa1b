"""The report's teacher and student-training sections: the three teachers (transformer, char n-gram
model, their combination), which teacher the student learnt from and why (dev scores), and how each
student row was trained (one rule for all: steps, best step, lr chosen on dev)."""

from __future__ import annotations

from typing import Mapping

from afrocomet.evaluate import format_table
from afrocomet.evaluate import is_number as _is_number
from afrocomet.report.fmt import _pct
from afrocomet.report.read import SEEN, UNSEEN, _average, _get, _languages, _system_name

TEACHERS = ("teacher", "tfidf_baseline", "teacher_combined")


def group_mean(results: Mapping, system: str, langs: tuple[str, ...]) -> float | None:
    """Mean weighted F1 of `system` over those of `langs` the run has (None unless all are there)."""
    per = _languages(results)
    values = [_get(per, lang, system, "weighted_f1") for lang in langs]
    if not values or not all(_is_number(v) for v in values):
        return None
    return sum(float(v) for v in values) / len(values)


def _row(results: Mapping, system: str) -> dict[str, str]:
    return {"avg": _pct(_average(results, system).get("weighted_f1")),
            "seen (hau, swa)": _pct(group_mean(results, system, SEEN)),
            "unseen (ibo, kin, yor)": _pct(group_mean(results, system, UNSEEN))}


def teachers_section(results: Mapping) -> list[str]:
    """## The teachers: the three rows, the weight w chosen on dev, and which student learnt more."""
    combined = results.get("ngram_teacher")
    if not isinstance(combined, Mapping) or "teacher_combined" not in (results.get("average") or {}):
        return []
    rows = {_system_name(s): _row(results, s) for s in TEACHERS if s in (results.get("average") or {})}
    T = combined.get("temperature")
    text = [f"The combined teacher's class probabilities are w · softmax(z/T) + (1 − w) · p_ngram with T = {T:g} "
            f"(stage 2's) and {_weight_choice(combined)}. Stage 2's logit KD reads this mixture (each training tweet "
            "at its language's w); attention matching reads the transformer. On the training tweets the n-gram "
            f"model's probabilities are out of fold ({combined.get('folds', '?')}-fold cross-fitting: each tweet's "
            "come from a model that never saw it)."]
    oof = combined.get("out_of_fold_train_weighted_f1") or {}
    if oof:
        text.append("Their weighted F1 on train: " + ", ".join(f"{k} {100 * float(v):.1f}" for k, v in oof.items())
                    + " (in-sample probabilities would be near one-hot memorisation).")
    return ["## The teachers", "", format_table(rows, list(next(iter(rows.values()))), first_column="teacher "
            "(weighted F1 %, test)"), " ".join(text), "", *_choice_lines(results)]


def _weight_choice(combined: Mapping) -> str:
    """How w was chosen: per language, each with its dev score (or, from an older results.json, one w)."""
    grid, weights = combined.get("dev_weighted_f1") or {}, combined.get("weights")
    if not isinstance(weights, Mapping):  # one w for every language, its mean dev weighted F1 per candidate
        return (f"**w = {combined.get('weight'):g}** for the transformer, chosen on dev among {', '.join(grid)} (mean dev "
                f"weighted F1 {', '.join(f'{k}: {100 * float(v):.2f}' for k, v in grid.items())})")
    chosen = []
    for lang, w in weights.items():
        scores = grid.get(lang) or {}
        best, alone = scores.get(f"{float(w):g}"), scores.get("0")
        chosen.append(f"{lang} **{float(w):g}**" + (f" (dev {100 * float(best):.2f}; n-gram alone {100 * float(alone):.2f})"
                                                    if _is_number(best) and _is_number(alone) else ""))
    candidates = ", ".join(next((list(v) for v in grid.values() if isinstance(v, Mapping)), []))
    return (f"w for the transformer chosen on each language's dev set among {candidates}: " + "; ".join(chosen))


def _dev_of(results: Mapping, tag: str) -> float | None:
    """Best dev score of a student row's stage 2 (first language and seed): stage2<tag>."""
    for name, s in (results.get("stages") or {}).items():
        if isinstance(s, Mapping) and s.get("kind") == "distill-task" and not name.startswith(("alpha-search", "lr-search")) \
                and name.endswith(tag) and (tag or "[" not in name):
            return s.get("best_score")
    return None


def _choice_lines(results: Mapping) -> list[str]:
    """The student distilled from the combined teacher beside the paper's (transformer alone), on dev and test."""
    if "student_paper" not in (results.get("average") or {}):
        return []
    dev = {"student": _dev_of(results, ""), "student_paper": _dev_of(results, "[paper]")}
    test = {s: _average(results, s).get("weighted_f1") for s in dev}
    rows = {_system_name(s): {"dev weighted F1": _pct(dev[s]), "test weighted F1": _pct(test[s]),
                              **{k: v for k, v in _row(results, s).items() if k != "avg"}} for s in dev}
    lines = ["Same student, stage 1 and training rule; only stage 2's KD target differs:", "",
             format_table(rows, list(next(iter(rows.values()))), first_column="student")]
    if _is_number(dev["student"]) and _is_number(dev["student_paper"]):
        won = dev["student"] >= dev["student_paper"]
        lines.append(f"On dev the student of the combined teacher scored {100 * (dev['student'] - dev['student_paper']):+.2f} "
                     f"points against the paper's: the combined teacher {'is' if won else 'is not'} the better "
                     f"choice on this run's dev sets{'' if won else '; rerun with --no-ngram-teacher for the paper method'}. "
                     "It is the default (`model.ngram_teacher`); `--no-ngram-teacher` gives the paper's method.")
    return [*lines, ""]


def training_section(results: Mapping) -> list[str]:
    """## How each student trained: the one rule, then each row's steps, best step and lr (dev)."""
    stages = {n: s for n, s in (results.get("stages") or {}).items() if isinstance(s, Mapping)}
    searches = {n[len("lr-search"):]: s for n, s in stages.items() if n.startswith("lr-search") and s.get("kind") == "lr-search"}
    if not searches:
        return []
    rows = {}
    for tag, search in searches.items():
        stage = stages.get(f"stage2{tag}") or next((s for n, s in stages.items() if s.get("kind") == "distill-task"
                                                    and n.endswith(tag) and not n.startswith(("lr-", "alpha-"))), {})
        system = _tag_system(results, tag)
        rows[_system_name(system) if system else tag] = {
            "steps trained": f"{int(stage.get('steps') or 0):,}" + (" (early stop)" if stage.get("stopped_early") else ""),
            "best step": f"{int(stage['best_step']):,}" if _is_number(stage.get("best_step")) else "-",
            "lr (dev)": f"{search.get('chosen'):g}" if _is_number(search.get("chosen")) else "-",
            "dev weighted F1": _pct(stage.get("best_score"))}
    first = next(iter(searches.values()))
    epochs = f"{first['max_epochs']:g}" if _is_number(first.get("max_epochs")) else "?"
    rule = (f"Every student row trains stage 2 by one rule: at most {epochs} epochs"
            + (f" / {first['max_steps']:,} steps" if _is_number(first.get("max_steps")) else "")
            + f", dev evaluation with early stopping after {first.get('patience', '?')} evaluations without "
            f"improvement, never before step {int(first.get('min_steps') or 0):,} (stage 2's own budget), the best "
            f"step kept; " + _lr_rule(first))
    return ["## How each student trained", "", rule, "", format_table(rows, list(next(iter(rows.values()))),
                                                                       first_column="student"), ""]


def _lr_rule(search: Mapping) -> str:
    """How the rows' lr was set: chosen on dev among the probed ones, or (no search) the stage's."""
    if not search.get("dev_weighted_f1"):
        return "its lr fixed, no search on dev (`lr_factors` gave one candidate)."
    return (f"its lr chosen on dev among {', '.join(search['dev_weighted_f1'])} "
            f"({search.get('probe_steps', '?')}-step probes).")


def _tag_system(results: Mapping, tag: str) -> str | None:
    """The system of a stage tag: "" -> student, "[kd_only]" -> student_kd_only, ..."""
    name = "student" + ("_" + tag.strip("[]").split("][")[0] if tag else "")
    return name if name in (results.get("average") or {}) else None
