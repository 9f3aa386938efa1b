"""Issue 13 items 4-6: the default budgets evaluate often enough for early stopping and best-on-dev
to act, and the labels-only student trained to convergence on dev (its budget, stage 1, lr search)."""

from __future__ import annotations

import math
from dataclasses import replace

from afrocomet.config import RunConfig
from afrocomet.distill.optimization import StepPlan
from afrocomet.run import default_stages, run_variants
from afrocomet.run.students import CONVERGE_EPOCHS, CONVERGE_PATIENCE, converged

N_TRAIN = 37_998  # AfriSenti training tweets of the five default languages (hau, ibo, kin, swa, yor)


def _evaluations(stage, n: int = N_TRAIN) -> int:
    plan = StepPlan.of(stage, n)
    return math.ceil(plan.total_steps / plan.eval_every)


def test_default_task_stages_evaluate_often_enough():
    """Every default stage that keeps a best-on-dev state evaluates at least 3 times (the teacher's
    fine-tuning twice: each of its evaluations is ~17 s of a 15-minute run; its best may still be
    before the last step), and stage 2 more often than its patience, so that a stop can happen before
    the last step."""
    stages = {s.name: s for s in default_stages()}
    assert _evaluations(stages["teacher-finetune"]) >= 2
    assert _evaluations(stages["stage1"]) >= 3
    stage2 = stages["stage2"]
    assert _evaluations(stage2) >= 4 and _evaluations(stage2) > stage2.patience + 1
    quick = {s.name: s for s in default_stages(quick=True)}
    for name in ("teacher-finetune", "stage1", "stage2"):
        assert _evaluations(quick[name]) >= 2, name


def test_converged_stage_is_a_longer_budget_with_early_stopping():
    stage2 = {s.name: s for s in default_stages()}["stage2"]
    budget = StepPlan.of(stage2, N_TRAIN).total_steps
    long = converged(stage2, budget)
    assert long.epochs == CONVERGE_EPOCHS * stage2.epochs and long.max_steps is None
    assert long.patience == max(stage2.patience, CONVERGE_PATIENCE) and long.eval_every == stage2.eval_every
    assert StepPlan.of(long, N_TRAIN).total_steps == CONVERGE_EPOCHS * StepPlan.of(stage2, N_TRAIN).total_steps
    capped = converged(replace(stage2, max_steps=12, patience=0), 12)
    assert capped.max_steps == 12 * CONVERGE_EPOCHS and capped.patience == CONVERGE_PATIENCE
    # never stopped before the same-steps student's budget: it cannot end with fewer steps than that row
    assert long.min_steps == budget and capped.min_steps == 12
    assert replace(long, epochs=stage2.epochs, patience=stage2.patience, min_steps=0) == stage2  # nothing else differs


def test_every_student_row_is_one_variant_of_the_hybrid_student():
    """Issue 18: one training rule for all; each row differs only in what its label says."""
    variants = {v.system: v for v in run_variants(RunConfig(), combined=True)}
    assert list(variants) == ["student", "student_paper", "student_kd_only", "student_no_distill"]
    assert variants["student_no_distill"].stage == {"kd_weight": 0.0, "attention_weight": 0.0}
    assert variants["student_kd_only"].stage == {"attention_weight": 0.0}
    assert variants["student_paper"].stage == {"teacher_mix": None} and variants["student_paper"].stage1_from == ""
    assert "student_paper" not in {v.system for v in run_variants(RunConfig())}  # no combined teacher: no paper row
    assert [v.system for v in run_variants(RunConfig(ablations=False), combined=True)] == ["student", "student_paper"]
