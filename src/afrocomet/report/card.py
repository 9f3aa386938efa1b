"""The Hugging Face model card (README.md with YAML front matter) of a run's distilled student."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import yaml

from afrocomet.data.schema import LANGUAGE_NAMES
from afrocomet.evaluate import format_table
from afrocomet.evaluate import is_number as _is_number
from afrocomet.report.cite import AFRISENTI_BIBTEX, AFRISENTI_HF_ID, ISO_639_1, PAPER_BIBTEX
from afrocomet.report.efficiency import _efficiency_rows
from afrocomet.report.fmt import _pct, _safe_name
from afrocomet.report.read import ABLATION, _average, _get, _is_afrisenti, _labels, _lang_name, _languages, _retention
from afrocomet.report.sections import _retention_lines


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
    own_teacher = (results.get("retention_teacher") or "teacher") if system == "student" else "teacher"
    compared = (system, own_teacher, "tfidf_baseline")
    scores = {_lang_name(lang): {s: _get(m, s, "weighted_f1") for s in compared} for lang, m in langs.items()}
    scores["**avg**"] = {s: _average(results, s).get("weighted_f1") for s in compared}
    for row, v in scores.items():
        own, teacher = v[system], v[own_teacher]
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
