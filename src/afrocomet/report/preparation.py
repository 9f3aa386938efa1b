"""The report's teacher-preparation section (vocabulary trimming, frozen parts, sequence length,
fine-tuning budget, the teacher against the majority on dev, the time estimate against the real
time), the tokenizer-coverage table, and the warning line of a teacher that learnt nothing."""

from __future__ import annotations

from typing import Mapping

from afrocomet.evaluate import format_table
from afrocomet.evaluate import is_number as _is_number
from afrocomet.report.fmt import _fmt_seconds, _pct
from afrocomet.report.read import _get, _lang_name


def teacher_warning_lines(results: Mapping) -> list[str]:
    """A bold line when the teacher scored no better than the majority baseline on dev."""
    if not results.get("teacher_below_majority"):
        return []
    dev = results.get("teacher_dev") or {}
    return [f"**Warning: the teacher scores no better than the majority baseline on dev** (weighted F1 "
            f"{_pct(dev.get('teacher'))} vs {_pct(dev.get('majority'))}): it learnt nothing, and the retention "
            "below compares students with a constant classifier. Check the teacher-finetune stage (learning rate, "
            "steps).", ""]


def frozen_text(frozen: Mapping) -> str:
    """'embeddings and layers 1-6 of 12', 'nothing', ..."""
    parts = ["embeddings"] if frozen.get("embeddings") else []
    if frozen.get("layers"):
        parts.append(f"layers 1-{frozen['layers']} of {frozen.get('of_layers') or '?'}")
    return " and ".join(parts) or "nothing"


def _finetune_text(results: Mapping) -> str:
    stage = next((s for s in (results.get("stages") or {}).values()
                  if isinstance(s, Mapping) and s.get("kind") == "teacher-finetune"), None)
    cfg = next((s for s in _get(results, "config", "stages") or [] if s.get("kind") == "teacher-finetune"), None)
    if stage is None:
        return ""
    steps = f"{int(stage['steps']):,} steps" if _is_number(stage.get("steps")) else "?"
    batch = f" of {cfg['batch_size']} texts at lr {cfg['lr']:g}" if cfg else ""
    time = f", {_fmt_seconds(float(stage['seconds']))}" if _is_number(stage.get("seconds")) else ""
    return f"{steps}{batch}{time}"


def preparation_section(results: Mapping) -> list[str]:
    """What was done to the teacher before distillation, and what it cost."""
    items = []
    trim = results.get("vocab_trim")
    if isinstance(trim, Mapping):
        t, s = trim.get("teacher") or {}, trim.get("student") or {}
        text = (f"{trim['rows_kept']:,} of {trim['rows_total']:,} rows kept "
                f"({100 * trim['rows_kept'] / trim['rows_total']:.1f}%), {trim.get('when', 'before stage 1')}")
        if t:
            text += f"; teacher {t['parameters_before']:,} → {t['parameters_after']:,} parameters"
        if s:
            text += f", student {s['parameters_before']:,} → {s['parameters_after']:,}"
        if _is_number(trim.get("token_coverage")):
            text += f"; the kept pieces cover {100 * trim['token_coverage']:.2f}% of the training text's tokens"
        items.append(("vocabulary", text))
    frozen = results.get("teacher_frozen")
    if isinstance(frozen, Mapping):
        items.append(("frozen while the teacher is fine-tuned", f"{frozen_text(frozen)} "
                      f"({frozen['trainable_parameters']:,} of {frozen['parameters']:,} parameters trained)"))
    finetune = _finetune_text(results)
    if finetune:
        items.append(("teacher fine-tuning", finetune))
    max_length = _get(results, "config", "data", "max_length")
    if max_length and items:  # beside what was done to the teacher
        items.append(("max length", f"{max_length} tokens a text"))
    dev = results.get("teacher_dev")
    if isinstance(dev, Mapping) and _is_number(dev.get("teacher")):
        verdict = "no better than" if dev.get("below_majority") else "above"
        items.append(("teacher on dev", f"weighted F1 {_pct(dev['teacher'])}, {verdict} the majority baseline's "
                      f"{_pct(dev.get('majority'))}"))
    est = results.get("time_estimate")
    if isinstance(est, Mapping) and _is_number(est.get("seconds")):
        wall, trained = est.get("wall_seconds"), est.get("training_seconds")
        real = f" (it took {_fmt_seconds(float(trained))})" if _is_number(trained) else ""
        real += f"; the whole run took {_fmt_seconds(float(wall))}" if _is_number(wall) else ""
        items.append(("time", f"estimated {_fmt_seconds(float(est['seconds']))} of training before it started{real}"))
    if not items:
        return []
    return ["## Teacher preparation", "", *[f"- **{k}**: {v}" for k, v in items], "", *coverage_table(results)]


def coverage_table(results: Mapping) -> list[str]:
    """Each language's `<unk>` rate under the teacher's tokenizer (training text), and after
    `data.normalize` where it ran."""
    cov = results.get("tokenizer_coverage")
    per = (cov or {}).get("per_language") if isinstance(cov, Mapping) else None
    if not per:
        return []
    after = cov.get("per_language_normalized")
    rows = {}
    for lang, r in per.items():
        row = {"tokens": f"{r['tokens']:,}", "`<unk>`": f"{r['unk']:,}", "`<unk>` rate": f"{100 * r['unk_rate']:.3f}%",
               "texts with `<unk>`": f"{r['texts_with_unk']:,} of {r['texts']:,}"}
        if after:
            row[f"`<unk>` rate, {cov['normalize']}"] = f"{100 * after[lang]['unk_rate']:.3f}%"
        rows[_lang_name(lang)] = row
    rules = cov.get("rules")
    note = ""
    if cov.get("normalize") not in (None, "none"):
        done = ", ".join(f"{k} → {v}" for k, v in (rules or {}).items())
        note = (f"`data.normalize: {cov['normalize']}` decomposed {done}"
                + "; the rule is part of the saved tokenizers, so `afrocomet predict` applies it too."
                if rules else f"`data.normalize: {cov['normalize']}` found no character to decompose.")
    else:
        note = "`data.normalize: nfd-unknown` keeps letters that fall to `<unk>` where their NFD pieces exist."
    return ["Tokenizer coverage (training text, no special tokens):", "",
            format_table(rows, list(next(iter(rows.values()))), first_column="language"), note, ""]
