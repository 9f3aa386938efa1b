"""The run's training time, estimated before the teacher is fine-tuned (one log line, and
results.json's `time_estimate` beside the real `wall_seconds`).

Each stage's planned optimizer steps (its epochs and max_steps over the run's data, as the loop
plans them) times the time of one step of its models, measured here on a few steps at the stage's
batch size and the training text's mean length: the trained model's encoder forward and backward,
plus the teacher's forward where the stage reads a teacher. Dev evaluations, early stopping, the
optimizer update and the teacher-output and frozen-prefix caches are not counted, so it is a
first-order figure.
Timing runs under a forked RNG and leaves no gradient behind: the run's numbers do not change.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn

from afrocomet.config import StageConfig
from afrocomet.models.presets import is_preset
from afrocomet.run.context import Context

log = logging.getLogger("afrocomet")

TIMED_STEPS = 2  # after one warm-up step


def time_step(model: nn.Module, batch_size: int, length: int, *, backward: bool) -> float:
    """Seconds of one encoder forward (and backward) of `model` on a [batch_size, length] batch of
    random ids (the mean of TIMED_STEPS after a warm-up)."""
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(min(5, vocab - 1), vocab, (batch_size, length),
                        generator=torch.Generator().manual_seed(0)).to(device)  # [b, s]
    mask = torch.ones_like(ids)
    was_training = model.training
    model.train(backward)
    times = []
    try:
        for _ in range(TIMED_STEPS + 1):
            t0 = time.perf_counter()
            if backward:
                hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # [b, s, h]
                if hidden.requires_grad:
                    hidden.float().mean().backward()
            else:
                with torch.inference_mode():
                    model.base_model(input_ids=ids, attention_mask=mask)
            times.append(time.perf_counter() - t0)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return sum(times[1:]) / TIMED_STEPS


def _probe_student(ctx: Context) -> nn.Module:
    """A student of the run's shape and (trimmed) vocabulary size; its weights do not matter."""
    from transformers import AutoConfig

    from afrocomet.models.build import build_model
    from afrocomet.models.presets import get_preset

    m, vocab = ctx.config.model, len(ctx.data.tokenizer)
    if is_preset(m.student):
        return build_model(get_preset(m.student), "mlm", vocab_size=vocab, seed=0)
    config = AutoConfig.from_pretrained(m.student, trust_remote_code=m.trust_remote_code)
    config.vocab_size = vocab
    return build_model(config, "mlm")


def _student_runs(ctx: Context) -> tuple[int, list[int]]:
    """(student variants x seeds, training-set sizes: the whole set, or one per language)."""
    from afrocomet.run.students import run_variants

    runs = len(run_variants(ctx.config)) * ctx.config.seeds
    groups = ctx.data.train.groups
    if ctx.config.data.per_language and len(ctx.data.datasets) > 1:
        return runs, [sum(1 for g in groups if g == lang) for lang in ctx.data.datasets]
    return runs, [len(groups)]


def _plan_steps(stage: StageConfig, sizes: list[int]) -> int:
    from afrocomet.distill.optimization import StepPlan

    return sum(StepPlan.of(stage, n).total_steps for n in sizes)


def _mean_length(ctx: Context) -> int:
    ids = ctx.data.train.ids
    return max(2, round(sum(len(x) for x in ids) / max(1, len(ids))))


def estimate_run(ctx: Context, teacher: nn.Module) -> dict:
    """Estimated seconds of every stage still to train (the teacher's fine-tuning, every student
    variant's stages, the language-sampling search) and their sum; logs one line."""
    t0 = time.perf_counter()
    length, (runs, sizes) = _mean_length(ctx), _student_runs(ctx)
    unlabelled = len(ctx.data.unlabelled) * sum(sizes) // max(1, len(ctx.data.train))  # + extra text, same split
    stages: dict[str, dict] = {}
    cuda = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        student = _probe_student(ctx).to(ctx.device)
        cache: dict[tuple, float] = {}

        def step(model: nn.Module, name: str, batch: int, backward: bool) -> float:
            if (name, batch, backward) not in cache:
                cache[name, batch, backward] = time_step(model, batch, length, backward=backward)
            return cache[name, batch, backward]

        for stage in ctx.config.stages:
            if stage.kind == "teacher-pretrain":
                continue  # trained before the estimate (built-in teachers only)
            if stage.kind == "teacher-finetune":
                steps = _plan_steps(stage, [len(ctx.data.train)])
                each = step(teacher, "teacher", stage.batch_size, True)
            else:
                n = [unlabelled] if stage.kind == "distill-mlm" and len(sizes) == 1 else sizes
                steps = runs * _plan_steps(stage, n)
                each = step(student, "student", stage.batch_size, True)
                if stage.reads_teacher:
                    each += step(teacher, "teacher", stage.batch_size, False)
            stages[stage.name] = {"steps": steps, "seconds": round(steps * each, 1)}
        search = _alpha_search(ctx, sizes)
        if search:
            each = step(student, "student", search["batch_size"], True)
            stages["alpha-search"] = {"steps": search["steps"], "seconds": round(search["steps"] * each, 1)}
    total = round(sum(s["seconds"] for s in stages.values()), 1)
    parts = ", ".join(f"{name} {s['steps']:,} steps ~{_fmt(s['seconds'])}" for name, s in stages.items())
    log.info("estimated training time: ~%s (%s; from timed steps at each stage's batch size, %d tokens a text; "
             "evaluation not counted)", _fmt(total), parts, length)
    return {"seconds": total, "stages": stages, "tokens_per_text": length,
            "measured_in_seconds": round(time.perf_counter() - t0, 1)}


def _alpha_search(ctx: Context, sizes: list[int]) -> dict | None:
    """Steps of the language-sampling search (a short stage-2 copy per candidate), if the run does one."""
    stage = next((s for s in ctx.config.stages if s.kind == "distill-task"), None)
    d = ctx.config.data
    if stage is None or not d.alpha_candidates or len(set(ctx.data.train.groups)) < 2 or len(sizes) > 1:
        return None
    steps = min(d.probe_steps, stage.max_steps or math.inf)
    return {"steps": int(steps) * len(d.alpha_candidates), "batch_size": stage.batch_size}


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.1f} min"
