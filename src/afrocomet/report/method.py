"""The report's method section: what each compared system differs in from the hybrid student, and
how its own choices (α, lr, C, the step kept) were made on dev. Each line only where its data is."""

from __future__ import annotations

from typing import Mapping

from afrocomet.evaluate import is_number as _is_number
from afrocomet.report.read import _get, _languages, _system_name, _systems


def _teacher_line(results: Mapping) -> str | None:
    stages = results.get("stages") or {}
    if not any(isinstance(s, Mapping) and s.get("kind") == "teacher-finetune" for s in stages.values()):
        return None
    sampling = results.get("sampling") or {}
    fixed, chosen = _get(results, "config", "data", "sampling_alpha"), sampling.get("alpha")
    text = "the larger model, fine-tuned on the gold labels before the students (no distillation)"
    if _is_number(fixed) and _is_number(chosen) and not sampling.get("per_language"):
        if float(fixed) != float(chosen):
            text += (f"; languages sampled with the fixed α = {fixed:g} (`data.sampling_alpha`), while every student's "
                     f"task stage uses α = {chosen:g}, chosen on dev after the teacher was trained")
        else:
            text += f"; languages sampled with α = {fixed:g}, as the students"
    return text


def _combined_line(results: Mapping) -> str | None:
    combined = results.get("ngram_teacher")
    if not isinstance(combined, Mapping) or not _is_number(combined.get("weight")):
        return None
    return (f"class probabilities w · softmax(z/T) + (1 − w) · p_ngram of the two rows above, w {_weights_text(combined)} "
            "chosen on dev; what stage 2's logit KD of the hybrid student reads")


def _weights_text(combined: Mapping) -> str:
    """`per language (hau 0.5, ibo 0.3, ...)`, or `= 0.5` (a results.json written before per-language w)."""
    weights = combined.get("weights")
    if isinstance(weights, Mapping) and weights:
        return "per language (" + ", ".join(f"{lang} {float(w):g}" for lang, w in weights.items()) + ")"
    return f"= {combined['weight']:g}"


def _init_line(results: Mapping, mode: str) -> str | None:
    """The compared initialisation `mode` (`--compare-init`): how its student started stage 1."""
    if mode == "random":
        return "random weights before stage 1 (`student_init: random`); all else the same"
    init = next((s for name, s in (results.get("stages") or {}).items()  # the first language and seed
                 if name.startswith(f"student-init[{mode}_init]") and isinstance(s, Mapping)), None)
    if init is None:
        return None
    layers = ", ".join(str(j) for _, j in init.get("layer_map") or [])
    if mode == "teacher":
        kept = init.get("explained_variance")
        text = ("before stage 1, the teacher's weights projected onto the top principal directions of its word "
                f"embeddings (keeping {f'{kept:.0%}' if _is_number(kept) else '?'} of their variance), student layers "
                f"from teacher layers {layers} (0-based; `student_init: teacher`)")
    else:
        text = (f"before stage 1, the teacher's embeddings and layers {layers} (0-based) copied whole, "
                "DistilBERT's rule (`student_init: layers`)")
    return text + "; all else the same"


def _compare_init_note(results: Mapping) -> list[str]:
    """Which initialisation the hybrid student used, and the compared ones that could not apply."""
    note = results.get("compare_init")
    if not isinstance(note, Mapping):
        return []
    text = f"The hybrid student starts from `student_init: {note.get('student_init', '?')}`."
    skipped = note.get("skipped") or {}
    if skipped:
        text += " Not compared: " + "; ".join(f"`{m}` ({why})" for m, why in skipped.items()) + "."
    return [text, ""]


def _tfidf_line(results: Mapping) -> str | None:
    chosen = {lang: _get(m, "tfidf_baseline", "selection") for lang, m in _languages(results).items()}
    chosen = {lang: s for lang, s in chosen.items() if isinstance(s, Mapping) and _is_number(s.get("C"))}
    if not chosen:
        return None
    grid = ", ".join(next(iter(chosen.values())).get("dev_weighted_f1") or {})
    return ("character 2-5-gram TF-IDF + logistic regression; C chosen on dev per language"
            + (f" among {grid}" if grid else "") + ": " + ", ".join(f"{lang} {s['C']:g}" for lang, s in chosen.items()))


def _method_section(results: Mapping) -> list[str]:
    """## How the systems differ: one line per system in the tables, then what all share."""
    systems = _systems(results)
    if "student" not in systems or len(systems) < 2:
        return []
    lines = {
        "teacher": _teacher_line(results),
        "student": "stage 1 distils the teacher's masked-LM logits and attention maps, with the masked-LM labels; "
                   "stage 2 its class logits and attention maps, with the gold labels",
        "student_kd_only": "attention weight 0 in stage 1 and stage 2 (logit KD and labels only); all else the same",
        "student_paper": "the same stage 1 (shared, not retrained); stage 2's logit KD reads the transformer teacher "
                         "alone (the paper's method) instead of the combined teacher",
        "student_no_distill": "no teacher in either stage: stage 1 learns from the masked-LM labels only, stage 2 from "
                              "the gold labels only; the same training rule and α",
        "teacher_combined": _combined_line(results),
        **{f"student_{mode}_init": _init_line(results, mode) for mode in ("random", "teacher", "layers")},
        "tfidf_baseline": _tfidf_line(results),
        "majority": "the most frequent training label, everywhere",
    }
    items = [f"- **{_system_name(s)}**: {lines[s]}." for s in systems if lines.get(s)]
    shared = ("Every task stage evaluates on dev during training and keeps the weights of its best evaluation "
              "(the step is in the stage table, `best_step` in results.json); every student row trains stage 2 by "
              "the same rule (below).")
    return ["## How the systems differ", "", "Each row differs from the hybrid student only as said here.", "",
            *items, "", *_compare_init_note(results), shared, ""]
