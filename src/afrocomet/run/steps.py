"""`afrocomet run`, top to bottom: check -> data -> tokenizer -> teacher (trim, fine-tune) -> students ->
evaluate -> efficiency -> report.

The stages themselves all go through `distill.trainer.train_stage` (see `Context.train`); this module
only decides which models and data each step gets, and in what order. Systems compared in one run:

- `teacher` (the transformer), `tfidf_baseline` (char 2-5-gram TF-IDF + logistic regression, C chosen on
  dev: the n-gram model), `teacher_combined` (their class probabilities mixed, w chosen on dev:
  run/ngram_teacher.py; what stage 2's logit KD reads unless `--no-ngram-teacher`),
- `student` (hybrid: KD + attention + labels), `student_paper` (stage 2 from the transformer alone, the
  paper's method), `student_kd_only` (attention weight 0), `student_no_distill` (labels only), every
  student row trained by one rule (run/students.py `converged`, lr chosen on dev), `majority`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from afrocomet.config import RunConfig, validate
from afrocomet.run.context import Context
from afrocomet.run.dev import dev_logits
from afrocomet.run.efficiency import measure_efficiency
from afrocomet.run.estimate import estimate_run
from afrocomet.run.jobs import Row, choose_jobs, train_side_by_side
from afrocomet.run.inputs import (check_training_labels, load_datasets, prepare_data, prepare_tokenizer,
                                  sample_datasets)
from afrocomet.run.ngram_teacher import fit_ngram_teacher, with_soft_labels
from afrocomet.run.outputs import check_output_dir, check_resume, run_inputs
from afrocomet.run.students import ALL, language_contexts, run_variants, train_student
from afrocomet.run.systems import evaluate_systems, write_predictions
from afrocomet.run.teacher import (build_teachers, check_teacher, finetune_teacher, freeze_teacher, save_hf_model,
                                   student_trim, trim_vocabulary)

log = logging.getLogger("afrocomet")
Models = dict[str, list[dict[str, nn.Module]]]  # system -> one {language or ALL: model} per seed


def run(config: RunConfig, *, overwrite: bool = False, progress: bool = True, resume: bool = False,
        source: str = "config") -> dict:
    """The whole method on one config; everything lands in `config.out` at once at the end.

    Pre-flight first (models, weights, layer maps, matching; then the tokenizer against the models'
    vocabularies): a bad run fails in seconds, before any training. `source` names the config in
    error messages (e.g. its file).

    The run is built in `<out>.partial/` (see `afrocomet.workdir`); with `resume`, an interrupted
    run there continues: finished stages are loaded, the running one restarts from its checkpoint.
    """
    from afrocomet.config import save_config
    from afrocomet.device import resolve_device, torch_threads

    from afrocomet.distill.parallel import processes
    from afrocomet.workdir import run_folder

    config = validate(config)
    procs = processes()
    shapes = check_before_training(config, main=procs.is_main, overwrite=overwrite, resume=resume, source=source)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)  # new heads of pretrained models: the same in every process and launcher
    with run_folder(Path(config.out), resume=resume, overwrite=overwrite, main=procs.is_main) as work, \
            torch_threads(config.threads):  # None: torch's default (training results depend on the count)
        if procs.is_main:
            save_config(config, work / "config.yaml")
        data, notes = prepare_inputs(config, shapes, work)
        ctx = Context(config, data, device, work, progress)
        ctx.preparation.update(notes)
        teachers = build_teachers(ctx)
        ctx.config, ctx.teacher_notes = replace(config, stages=teachers.stages), teachers.notes
        before_finetune(ctx, teachers.mlm, teachers.cls)  # trimming (model.trim_vocab) and the frozen parts
        teacher_mlm, teacher = finetune_teacher(ctx, teachers)
        ctx.preparation["teacher_dev"] = check_teacher(ctx, teacher)
        if combines_teachers(config):
            ctx.ngram = fit_ngram_teacher(ctx, dev_logits(teacher, ctx.data.dev, ctx.pad_id, ctx.device))
            ctx.data = with_soft_labels(ctx.data, ctx.ngram)
        seeds = [config.seed + i for i in range(config.seeds)]
        models = train_students(ctx, teacher_mlm, teacher, seeds)
        if not procs.is_main:  # training is shared; evaluation and the report are the main process's
            return {}
        languages, preds = evaluate_systems(ctx, models)
        save_models(ctx, models)
        results = collect_results(ctx, models, languages, seeds, started, t0)
        write_outputs(ctx, results, preds)
    return results


def check_before_training(config: RunConfig, *, main: bool, overwrite: bool, resume: bool, source: str):
    """The output folder, the pre-flight of models and layer maps, and (resume) the saved config.
    Returns the model shapes the tokenizer is checked against."""
    from afrocomet.distill.doctor import preflight

    out = Path(config.out)
    if main:
        check_output_dir(out, overwrite, run_inputs(config, source))
    shapes = preflight(config, where=source)
    if resume:
        check_resume(config, out)
    return shapes


def prepare_inputs(config: RunConfig, shapes, work: Path):
    """Datasets (sampled: data.train_rows, data.dev_rows) -> the run's tokenizer (checked against the
    models) -> (encoded splits, notes for results.json: the tokenizer's coverage of the training
    text, and the rows kept where a split was sampled)."""
    from afrocomet.distill.doctor import check_tokenizer_fits
    from afrocomet.workdir import STATE

    datasets, rows = sample_datasets(config, load_datasets(config))
    check_training_labels(config, datasets)  # before the tokenizer and any training
    tokenizer, coverage = prepare_tokenizer(config, datasets, work / STATE)
    check_tokenizer_fits(config, tokenizer, shapes)
    notes = {"tokenizer_coverage": coverage, **({"rows": rows} if rows else {})}
    return prepare_data(config, datasets, tokenizer), notes


def before_finetune(ctx: Context, teacher_mlm: nn.Module | None, teacher_cls: nn.Module) -> None:
    """Between building/loading the teachers and fine-tuning them: vocabulary trimming (fine-tuning
    then never updates rows the text does not use), the parts frozen during fine-tuning, and the
    time estimate (one log line). Recorded in `ctx.preparation` for results.json."""
    from afrocomet.report.preparation import frozen_text

    m = ctx.config.model
    if m.trim_vocab:
        ctx.data, ctx.vocab_keep, ctx.preparation["vocab_trim"] = trim_vocabulary(ctx, teacher_mlm, teacher_cls)
    finetunes = any(s.kind == "teacher-finetune" for s in ctx.config.stages)
    if finetunes and (m.freeze_teacher_embeddings or m.freeze_teacher_layers):
        frozen = freeze_teacher(teacher_cls, m.freeze_teacher_embeddings, m.freeze_teacher_layers)
        ctx.preparation["teacher_frozen"] = frozen
        log.info("teacher fine-tuning: %s frozen; %s of %s parameters trained", frozen_text(frozen),
                 f"{frozen['trainable_parameters']:,}", f"{frozen['parameters']:,}")
    ctx.preparation["estimate"] = estimate_run(ctx, teacher_cls)


def combines_teachers(config: RunConfig) -> bool:
    """model.ngram_teacher, and a distill-task stage with a KD term to read the combined teacher."""
    return config.model.ngram_teacher and any(s.kind == "distill-task" and s.kd_weight > 0 for s in config.stages)


def train_students(ctx: Context, teacher_mlm: nn.Module | None, teacher: nn.Module, seeds: list[int]) -> Models:
    """The teacher, and every student variant: per seed, one multilingual student or one per language.
    The paper's student (transformer teacher alone) is trained beside the hybrid one when the combined
    teacher differs from the transformer (w < 1 chosen on dev in some language)."""
    contexts = language_contexts(ctx)
    models: Models = {"teacher": [{ALL: teacher}]}
    combined = ctx.ngram is not None and ctx.ngram.combines
    if ctx.ngram is not None and not combined:
        log.info("combined teacher: w = 1 chosen on dev in every language, so it is the transformer alone; "
                 "no separate paper student")
    rows = {(v.system, i, lang): Row(lctx, v.tag + ("" if lang == ALL else f"[{lang}]")
                                     + (f"[seed{s}]" if s != seeds[0] else ""), v, s)
            for v in run_variants(ctx.config, combined=combined)
            for i, s in enumerate(seeds) for lang, lctx in contexts.items()}
    jobs = choose_jobs(ctx, len(rows))
    if jobs > 1:  # trained in worker processes, then loaded below as finished stages
        ctx.preparation["student_jobs"] = train_side_by_side(list(rows.values()), teacher_mlm, teacher, jobs)
    for (system, i, lang), row in rows.items():
        models.setdefault(system, [{} for _ in seeds])[i][lang] = train_student(
            row.ctx, teacher_mlm, teacher, row.tag, row.variant, row.seed)
    return models


def save_models(ctx: Context, models: Models) -> None:
    """teacher/, and student/ (or student/<lang>/ per language): the first seed's hybrid student."""
    save_hf_model(models["teacher"][0][ALL], ctx.data.tokenizer, ctx.work / "teacher")
    for lang, student in models["student"][0].items():
        save_hf_model(student, ctx.data.tokenizer, ctx.work / "student" / ("" if lang == ALL else lang))


def collect_results(ctx: Context, models: Models, languages: dict, seeds: list[int], started: str,
                    t0: float) -> dict:
    """results.json: metrics per language and on average, retention, efficiency, stages, settings."""
    from afrocomet import __version__
    from afrocomet.config import to_dict
    from afrocomet.environment import environment
    from afrocomet.evaluate import average_metrics, retention

    systems = list(next(iter(languages.values())))
    average = {sys_: average_metrics({lang: row[sys_] for lang, row in languages.items()}) for sys_ in systems}
    teacher, students = models["teacher"][0][ALL], models["student"][0]
    student = next(iter(students.values()))
    results = {
        "afrocomet_version": __version__, "created": started, "labels": list(ctx.data.labels), "systems": systems,
        "languages": languages, "average": average,
        "retention": retention(average["student"], average[own_teacher(ctx)]),
        "retention_teacher": own_teacher(ctx),
        "efficiency": measure_efficiency(ctx, teacher, student),
        "stages": ctx.results, "truncated": ctx.data.truncated, "seeds": seeds, "device": str(ctx.device),
        "sampling": {"alpha": ctx.sampling_alpha, "search": ctx.alpha_search,
                     "per_language": len(students) > 1},
        "config": to_dict(ctx.config),
        "environment": environment(),  # Python, platform, every package version (identical metrics need them)
    }
    if ctx.ngram is not None:
        results["ngram_teacher"] = ctx.ngram.record()
        results["retention_transformer"] = retention(average["student"], average["teacher"])
    prep = ctx.preparation
    if "vocab_trim" in prep:
        results["vocab_trim"] = student_trim(prep["vocab_trim"], student)
    for key in ("teacher_frozen", "tokenizer_coverage", "rows", "compare_init", "student_jobs"):
        if key in prep:
            results[key] = prep[key]
    results["teacher_dev"] = prep["teacher_dev"]
    results["teacher_below_majority"] = prep["teacher_dev"]["below_majority"]
    if ctx.teacher_notes:
        results["teacher"] = ctx.teacher_notes
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if "estimate" in prep:  # the estimate beside the real time
        trained = sum(float(r.get("seconds") or 0) for r in ctx.results.values()
                      if r.get("kind") not in ("teacher-pretrain", "student-init"))  # what the estimate covers
        results["time_estimate"] = {**prep["estimate"], "training_seconds": round(trained, 1),
                                    "wall_seconds": results["wall_seconds"]}
    return results


def own_teacher(ctx: Context) -> str:
    """The system the hybrid student was distilled from: the combined teacher, or the transformer."""
    return "teacher_combined" if ctx.ngram is not None and ctx.ngram.combines else "teacher"


def write_outputs(ctx: Context, results: dict, preds: dict) -> None:
    """predictions/<lang>.tsv, results.json, the report, and the student's model card."""
    from afrocomet.io import atomic_write_json, atomic_write_text
    from afrocomet.report import model_card, write_report

    write_predictions(ctx, preds, ctx.work)
    atomic_write_json(ctx.work / "results.json", results)
    write_report(results, ctx.work)
    atomic_write_text(ctx.work / "student" / "README.md", model_card(results))
