"""Combining a stage's loss terms into the total: fixed weights (default) or adaptive balancing.

- `none`: total = Σ w_i · L_i.
- `magnitude`: each term is divided by a running (EMA, detached) estimate of its own size, so every
  term contributes about w_i whatever its scale (a 250k-way MLM KL and a 3-way CE differ by 10x).
- `uncertainty`: learned homoscedastic-uncertainty weights (Kendall et al., 2018):
  total = Σ w_i · (exp(-s_i) · L_i + s_i), with s_i trained with the student.
"""

from __future__ import annotations

import torch
from torch import nn


class LossBalancer(nn.Module):
    def __init__(self, weights: dict[str, float], mode: str = "none", momentum: float = 0.98):
        super().__init__()
        self.weights = {k: float(w) for k, w in weights.items() if w > 0}
        self.mode = mode
        self.momentum = momentum
        self.running: dict[str, torch.Tensor | float] = {}  # floats when loaded from a checkpoint
        if mode == "uncertainty":
            self.log_vars = nn.ParameterDict({k: nn.Parameter(torch.zeros(())) for k in self.weights})

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for name, weight in self.weights.items():
            loss = losses[name]
            if self.mode == "magnitude":  # the running size stays a detached tensor: no device sync a step
                value = loss.detach().float()
                prev = self.running.get(name, value)
                self.running[name] = self.momentum * prev + (1 - self.momentum) * value
                term = weight * loss / self.running[name].clamp_min(1e-8).to(loss.dtype)
            elif self.mode == "uncertainty":
                s = self.log_vars[name]
                term = weight * (torch.exp(-s) * loss + s)
            else:
                term = weight * loss
            total = term if total is None else total + term
        if total is None:
            raise ValueError("no loss term has a weight above 0")
        return total

    def running_sizes(self) -> dict[str, float]:
        """The running sizes as floats (a checkpoint's record; one host read each)."""
        return {k: float(v) for k, v in self.running.items()}
