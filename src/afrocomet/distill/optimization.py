"""How long a stage trains and what updates its weights: the step plan (steps per epoch, total
steps, evaluation cadence), AdamW with its decay groups, the linear warm-up schedule, and the
soft-target temperature's schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from afrocomet.config import StageConfig
from afrocomet.device import fused_ok


@dataclass(frozen=True)
class StepPlan:
    steps_per_epoch: int  # optimizer steps in one epoch (batches // grad_accum, at least 1)
    total_steps: int  # of the stage: epochs' worth, capped by max_steps
    eval_every: int  # optimizer steps between dev evaluations

    @classmethod
    def of(cls, cfg: StageConfig, n_examples: int) -> StepPlan:
        batches_per_epoch = math.ceil(n_examples / cfg.batch_size)
        steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
        total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        return cls(steps_per_epoch, total_steps, cfg.eval_every or steps_per_epoch)


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """Trainable parameters of `modules` (each once): decayed, and not decayed (biases, LayerNorm,
    the uncertainty weights' log-variances)."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "log_vars" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: StageConfig, modules: list[nn.Module], total_steps: int, device: torch.device):
    """AdamW over `modules` and its linear schedule (warm-up for `cfg.warmup_ratio` of the steps)."""
    from transformers import get_linear_schedule_with_warmup

    # fused AdamW: one kernel per step instead of a dozen per tensor (CPU and CUDA since torch 2.4)
    optimizer = torch.optim.AdamW(param_groups(modules, cfg.weight_decay), lr=cfg.lr, fused=fused_ok(device))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def temperature_at(step: int, total_steps: int, start: float, end: float | None) -> float:
    """Linear temperature schedule from `start` to `end` over the stage (constant if end is None)."""
    if end is None or total_steps <= 1:
        return start
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return start + (end - start) * frac
