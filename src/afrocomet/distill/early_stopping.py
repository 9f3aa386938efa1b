"""Evaluation during a stage and early stopping: dev score every `eval_every` steps (and at the
last), the best weights kept on the CPU and restored at the end, a stop after `patience`
evaluations without improvement (never before `min_steps`).

The callback runs under its own RNG state (`torch.random.fork_rng`): whatever it draws cannot
change training. On several processes the main one evaluates and broadcasts its score, so every
process takes the same decision.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from afrocomet.distill.checkpoint import LoopState


class EarlyStopping:
    def __init__(self, evaluate: Callable[[nn.Module], float] | None, eval_every: int, total_steps: int,
                 patience: int, loop: LoopState, procs, device: torch.device, min_steps: int = 0):
        self.evaluate, self.eval_every, self.total_steps, self.patience = evaluate, eval_every, total_steps, patience
        self.min_steps = min_steps
        self.procs, self.device = procs, device
        self.best_score = -math.inf if loop.best_score is None else loop.best_score
        self.best_state, self.best_step, self.bad_evals = loop.best_state, loop.best_step, loop.bad_evals
        self.stopped = False

    def due(self, step: int) -> bool:
        return self.evaluate is not None and (step % self.eval_every == 0 or step == self.total_steps)

    def score(self, student: nn.Module) -> float:
        """The dev score of `student` (main process, own RNG), the same on every process; leaves it in train mode."""
        score = None
        if self.procs.is_main:  # the main process evaluates; every process takes its decision
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                score = float(self.evaluate(student))
        score = self.procs.broadcast(score)
        student.train()
        return score

    def update(self, score: float, step: int, student: nn.Module) -> bool:
        """Keep `student`'s weights if `score` is the best yet; True when patience has run out."""
        if score > self.best_score:
            self.best_score, self.bad_evals, self.best_step = score, 0, step
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in student.state_dict().items()}
        else:
            self.bad_evals += 1
            if self.patience and self.bad_evals >= self.patience and step >= self.min_steps:
                self.stopped = True
        return self.stopped

    def kept_score(self) -> float | None:
        """The best score whose weights are kept (None before the first evaluation)."""
        return None if self.best_state is None else self.best_score

    def restore(self, student: nn.Module) -> float | None:
        """Load the best weights seen into `student`; returns their score (None if never evaluated)."""
        if self.best_state is not None:
            student.load_state_dict(self.best_state)
        return self.kept_score()
