"""The students one run trains (the hybrid one, the ablations, the comparisons): each goes through
stage 1 (task-agnostic, masked LM) then stage 2 (task-specific), from the same teachers."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn

from afrocomet.config import RunConfig, StageConfig
from afrocomet.distill.optimization import StepPlan
from afrocomet.models.presets import is_preset
from afrocomet.run.context import Context
from afrocomet.run.teacher import convert_head

log = logging.getLogger("afrocomet")

STUDENT_STAGES = ("distill-mlm", "distill-task", "student-finetune")


class Variant(NamedTuple):
    """A student trained in the run: system name, tag in stage names, overrides of the distillation
    stages' fields (StageConfig, both stages) and of the model fields (ModelConfig).

    `stage1_from`: the tag of the variant whose stage 1 this one shares (loaded, not trained again:
    the same stage, seed and student)."""

    system: str
    tag: str
    stage: dict
    model: dict = {}
    stage1_from: str | None = None


NO_TEACHER = {"kd_weight": 0.0, "attention_weight": 0.0}
# Every student row trains stage 2 by one rule (`converged`, lr chosen on dev by `choose_lr` among the
# config's lr_factors times stage 2's) and
# differs from the hybrid student in what its label says only.
VARIANTS = (
    Variant("student", "", {}),
    Variant("student_kd_only", "[kd_only]", {"attention_weight": 0.0}),
    Variant("student_no_distill", "[no_distill]", NO_TEACHER),
)
# the student of the paper's method: the same stage 1, stage 2 from the transformer teacher alone
PAPER = Variant("student_paper", "[paper]", {"teacher_mix": None}, stage1_from="")
CONVERGE_EPOCHS = 3  # every student's stage 2: up to 3x its budget, early stopping on dev
CONVERGE_PATIENCE = 2  # ... after 2 dev evaluations without improvement, never before stage 2's own budget
ALL = "*"  # key of the one multilingual model in a {language: model} mapping


def language_contexts(ctx: Context) -> dict[str, Context]:
    """{ALL: ctx} for one multilingual student, or one context per language (data.per_language)."""
    if not ctx.config.data.per_language or len(ctx.data.datasets) == 1:
        return {ALL: ctx}
    return {lang: replace(ctx, data=ctx.data.only(lang)) for lang in ctx.data.datasets}


def run_variants(config: RunConfig, combined: bool = False) -> list[Variant]:
    """The students one run trains: the hybrid one, (`combined`: stage 2 from the combined teacher)
    the paper's student distilled from the transformer alone, the ablations (KD only; labels only),
    (compare_adaptive) the hybrid student with adaptive loss weights, and (compare_init) with each
    other `model.student_init` that fits the student and teacher (`models.student_init.compare_note`;
    the rest are skipped, see `new_student`)."""
    variants = [VARIANTS[0]] + ([PAPER] if combined else []) + list(VARIANTS[1:] if config.ablations else [])
    if config.compare_adaptive != "none":
        variants.append(Variant("student_adaptive", "[adaptive]", {"adaptive": config.compare_adaptive}))
    if config.compare_init:
        from afrocomet.models.student_init import compare_note

        m = config.model
        for mode in compare_note(m.student_init, m.student, m.teacher, m.trust_remote_code)["compared"]:
            variants.append(Variant(f"student_{mode}_init", f"[{mode}_init]", {}, {"student_init": mode}))
    return variants


def train_student(ctx: Context, teacher_mlm, teacher_cls, tag: str, variant: Variant, seed: int, *,
                  shared_only: bool = False) -> nn.Module | None:
    """Stage 1 (task-agnostic, MLM) then stage 2 (task-specific) for one student variant; `tag`
    (the variant's tag, then language and seed) ends every stage name. Stage 2 reads the combined
    teacher where the run has one (`ctx.ngram`: its weight as the stage's teacher_mix), and is
    trained by the rule every student row shares (`converged`, lr chosen on dev).

    `shared_only`: only what other rows read (stage 1, and the language-sampling alpha search if
    this row makes it), then None: what run.jobs trains before the rows go side by side."""
    student = new_student(ctx, teacher_mlm, teacher_cls, tag, variant.model, seed)
    labels = ctx.id2label
    for stage in ctx.config.stages:
        if stage.kind not in STUDENT_STAGES:
            continue
        if stage.kind == "distill-task" and ctx.ngram is not None:
            stage = replace(stage, teacher_mix=ctx.ngram.weight)
        stage = replace(stage, **variant.stage) if stage.kind != "student-finetune" else stage
        if stage.kind == "distill-mlm":
            shared = tag if variant.stage1_from is None else variant.stage1_from + tag[len(variant.tag):]
            ctx.train(stage, student, teacher=teacher_mlm if _uses_teacher(stage) else None, tag=shared, seed=seed)
            continue
        if "MaskedLM" in type(student).__name__:
            student = convert_head(student, "classification", len(labels), labels)
        teacher = teacher_cls if _uses_teacher(stage) else None
        if stage.kind == "distill-task" and ctx.alpha is None and _searches_alpha(ctx):
            choose_alpha(ctx, stage, student, teacher, seed)
        stage = converged(stage, StepPlan.of(stage, len(ctx.data.train)).total_steps)
        if shared_only:  # the teacher-output cache the rows' stage 2 read (the alpha search may have built it)
            if teacher is not None and stage.kind == "distill-task":
                from afrocomet.distill.trainer import prepare_teacher_cache

                prepare_teacher_cache(stage, student, teacher, ctx.data.train, ctx.data.tokenizer, ctx.device)
            return None
        stage = replace(stage, lr=choose_lr(ctx, stage, student, teacher, tag, seed))
        ctx.train(stage, student, teacher=teacher, tag=tag, seed=seed)
    if shared_only:
        return None
    if "MaskedLM" in type(student).__name__:
        student = convert_head(student, "classification", len(labels), labels)
    return student.eval()


def new_student(ctx: Context, teacher_mlm, teacher_cls, tag: str, model_overrides: dict, seed: int) -> nn.Module:
    """The student before stage 1: a preset built (and, student_init=teacher or layers, initialised
    from the teacher) or a saved model loaded (and trimmed to the run's vocabulary). With
    compare_init, the init modes that cannot apply are noted once (log, ctx.preparation["compare_init"])."""
    from afrocomet.models.build import build_model, load_pretrained
    from afrocomet.models.presets import get_preset

    m, vocab = replace(ctx.config.model, **model_overrides), len(ctx.data.tokenizer)
    if ctx.config.compare_init and "compare_init" not in ctx.preparation:
        from afrocomet.models.student_init import compare_note

        note = compare_note(ctx.config.model.student_init, m.student, m.teacher, m.trust_remote_code)
        ctx.preparation["compare_init"] = note
        for mode, problem in note["skipped"].items():
            log.info("compare_init: student_init=%s skipped (%s)", mode, problem)
    torch.manual_seed(seed)
    if is_preset(m.student):
        student = build_model(get_preset(m.student), "mlm", vocab_size=vocab, seed=seed)
        if m.student_init != "random":
            init_student(ctx, student, teacher_mlm if teacher_mlm is not None else teacher_cls, tag, m.student_init)
        return student
    student = load_pretrained(m.student, "mlm", trust_remote_code=m.trust_remote_code)
    if m.student_init != "random":
        log.info("student %s is a saved model: its own weights are kept (student_init=%s skipped)", m.student,
                 m.student_init)
    if ctx.vocab_keep is not None:
        from afrocomet.models.vocab import trim_model

        student = trim_model(student, ctx.vocab_keep)
    return student


def converged(stage: StageConfig, budget: int) -> StageConfig:
    """Stage 2 as every student row trains it: CONVERGE_EPOCHS times its budget (epochs and any
    max_steps), stopped early after CONVERGE_PATIENCE dev evaluations without improvement, the best
    kept, but never before `budget` steps (the stage's own): a student still at the majority class
    early on (a random-init student on a few thousand tweets) is not stopped before it has had them."""
    return replace(stage, epochs=stage.epochs * CONVERGE_EPOCHS,
                   max_steps=stage.max_steps * CONVERGE_EPOCHS if stage.max_steps else None,
                   patience=max(stage.patience, CONVERGE_PATIENCE), min_steps=max(stage.min_steps, budget))


def choose_lr(ctx: Context, stage: StageConfig, student: nn.Module, teacher: nn.Module | None, tag: str,
              seed: int) -> float:
    """The learning rate of `stage` chosen on dev among the config's lr_factors x stage.lr: a short copy
    of the stage per candidate (a quarter epoch, at most data.probe_steps, at most a third of the stage),
    from the same student; the best dev score wins (ties: the stage's own lr). One candidate (e.g.
    lr_factors [1]) or none: that lr (the stage's), no probe. Recorded with the stage results as `lr-search<tag>`."""
    plan = StepPlan.of(stage, len(ctx.data.train))
    steps = max(1, min(ctx.config.data.probe_steps, plan.steps_per_epoch // 4, plan.total_steps // 3))
    lrs = list(dict.fromkeys(float(f"{stage.lr * factor:.3g}") for factor in ctx.config.lr_factors)) or [stage.lr]
    if len(lrs) == 1:  # nothing to choose among: no probe
        scores, chosen, steps = {}, lrs[0], 0
    else:  # the probes build and read the caches the stage itself will (as alpha's probes)
        scores = _dev_probes(ctx, stage, student, teacher, seed, steps,
                             {lr: (f"lr-search[{lr:g}]", {"lr": lr}, {"tag": tag, "caches_as": stage}) for lr in lrs})
        chosen = max(scores, key=lambda lr: (scores[lr], -abs(math.log(lr / stage.lr))))
    ctx.results[f"lr-search{tag}"] = {"kind": "lr-search", "steps": 0, "probe_steps": steps, "chosen": chosen,
                                      "dev_weighted_f1": {f"{lr:g}": v for lr, v in scores.items()},
                                      "max_epochs": stage.epochs, "max_steps": stage.max_steps, "patience": stage.patience,
                                      "min_steps": stage.min_steps}
    if scores:
        log.info("stage %s%s: lr %g chosen on dev (%s)", stage.name, tag, chosen,
                 ", ".join(f"{lr:g}: {v:.4f}" for lr, v in scores.items()))
    return chosen


def _dev_probes(ctx: Context, stage: StageConfig, student: nn.Module, teacher: nn.Module | None, seed: int,
                steps: int, candidates: dict[float, tuple[str, dict, dict]]) -> dict[float, float]:
    """One short copy of `stage` per candidate (`steps` steps, one dev evaluation at the end), each from
    a copy of the same student: {candidate: (probe name, stage fields, Context.train arguments)} ->
    {candidate: its dev score}. The search that alpha and the converged student's lr share."""
    scores: dict[float, float] = {}
    for value, (name, fields, train_args) in candidates.items():
        probe = replace(stage, name=name, **fields, max_steps=steps, eval_every=steps, patience=0)
        ctx.train(probe, copy.deepcopy(student), teacher=teacher, seed=seed, **train_args)
        scores[value] = float(ctx.results[probe.name + train_args.get("tag", "")]["best_score"])
    return scores


def init_student(ctx: Context, student: nn.Module, teacher: nn.Module, tag: str, mode: str = "teacher") -> None:
    """student_init=teacher (PCA, models/init.py) or layers (models/layer_copy.py); what was done is
    recorded with the stage results."""
    from afrocomet.models.student_init import initialise

    t0 = time.perf_counter()
    report = {"kind": "student-init", "steps": 0, **initialise(student, teacher, mode)}
    report["seconds"] = round(time.perf_counter() - t0, 2)
    done = (f"explained variance {report['explained_variance']:.3f}" if mode == "teacher"
            else f"layers {[j for _, j in report['layer_map']]} copied")
    log.info("student initialised from the teacher, student_init=%s (%s) in %.1fs", mode, done, report["seconds"])
    ctx.results[f"student-init{tag}"] = report


def _searches_alpha(ctx: Context) -> bool:
    return bool(ctx.config.data.alpha_candidates) and len(set(ctx.data.train.groups)) > 1


def choose_alpha(ctx: Context, stage: StageConfig, student: nn.Module, teacher: nn.Module | None, seed: int) -> float:
    """Language sampling alpha chosen on dev: a short copy of `stage` per candidate, from the same
    student; the best dev score wins (ties: the one nearest data.sampling_alpha). Sets ctx.alpha.

    The probes read the teacher-output cache that `stage` itself would build (they build it first),
    so the search costs the student's steps only."""
    steps, default = min(ctx.config.data.probe_steps, stage.max_steps or math.inf), ctx.config.data.sampling_alpha
    scores = _dev_probes(ctx, stage, student, teacher, seed, steps,
                         {alpha: (f"alpha-search[{alpha:g}]", {}, {"alpha": alpha, "caches_as": stage})
                          for alpha in ctx.config.data.alpha_candidates})
    ctx.alpha = max(scores, key=lambda a: (scores[a], -abs(a - default)))
    ctx.alpha_search = {"stage": stage.name, "steps": steps, "dev_weighted_f1": {f"{a:g}": v for a, v in scores.items()},
                        "chosen": ctx.alpha}
    log.info("language sampling alpha %g chosen on dev (%s)", ctx.alpha,
             ", ".join(f"{a:g}: {v:.4f}" for a, v in scores.items()))
    return ctx.alpha


def _uses_teacher(stage: StageConfig) -> bool:
    return stage.reads_teacher
