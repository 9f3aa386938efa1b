"""The objective of a stage: the adaptor from model outputs to the small dict the losses see, and
the loss module that weighs a stage's terms (hard labels, KD, attention matching).

A stage kind decides the task (`StageConfig.task`); the weights of the stage decide which terms exist
(a weight of 0 removes a term: it is neither computed nor logged).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from afrocomet.config import StageConfig
from afrocomet.distill import losses as L
from afrocomet.distill.balancing import LossBalancer
from afrocomet.errors import AfroCometError
from afrocomet.models.build import mlm_head

def representation_only(cfg: StageConfig, missing: list[str]) -> StageConfig:
    """Stage `cfg` (distill-mlm) for a teacher whose masked-LM head is `missing` (weights the
    checkpoint lacked): the KD term on MLM logits is dropped (kd_weight 0), the attention term and
    the student's own MLM labels stay, and the teacher then runs its encoder only (HybridLoss).
    Without an attention term nothing would be learnt from the teacher: a one-line error."""
    from dataclasses import replace

    if cfg.attention_weight <= 0:
        raise AfroCometError(
            f"stage '{cfg.name}' ({cfg.kind}) needs the teacher's masked-LM head, which the teacher folder lacks "
            f"({len(missing)} weights, e.g. {missing[0]}), and has no attention term to distil without it: set "
            f"its attention_weight > 0 (representation-only distillation) or remove the stage")
    return replace(cfg, kd_weight=0.0)


def model_outputs(model: nn.Module, batch: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    """The adaptor: a model's outputs as the small dict the losses see (`logits`, `labels`).

    For masked LM, hidden states are gathered at the masked positions *before* the vocabulary
    projection, so logits are [n_masked, vocab] and never [batch, seq, vocab].
    """
    if task == "mlm":
        hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        selected = batch["mlm_labels"] != -100  # [b, s]
        logits = mlm_head(model)(hidden[selected])  # [n_masked, vocab]
        return {"logits": logits, "labels": batch["mlm_labels"][selected]}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [b, classes]
    return {"logits": logits, "labels": batch.get("labels")}


class HybridLoss(nn.Module):
    """The loss terms of one stage. Holds the attention matcher (whose parameters, in projection
    mode, train with the student) and the captures on the matched layers only."""

    def __init__(self, cfg: StageConfig, student: nn.Module, teacher: nn.Module | None):
        super().__init__()
        self.cfg = cfg
        self.task = cfg.task
        weights = {"hard": cfg.hard_weight}
        if teacher is not None:
            weights.update(kd=cfg.kd_weight, attention=cfg.attention_weight)
        self.weights = {k: w for k, w in weights.items() if w > 0}
        if not self.weights:
            raise AfroCometError(f"stage '{cfg.name}': every loss weight is 0, nothing to train")
        self.balancer = LossBalancer(self.weights, cfg.adaptive)
        self.uses_teacher = "kd" in self.weights or "attention" in self.weights
        self.matcher = None
        self.cache = None  # a distill.cache.TeacherCache standing in for the teacher (set by the trainer)
        self.prefix = None  # a distill.frozen_prefix.FrozenPrefix standing in for the student's frozen layers (same)
        if "attention" in self.weights:
            from afrocomet.distill.matching import build_matcher

            self.matcher = build_matcher(cfg.matching, student.config, teacher.config, cfg.layer_map,
                                         loss=cfg.attention_loss, relation_heads=cfg.relation_heads)

    def forward(self, student: nn.Module, teacher: nn.Module | None, batch: dict[str, torch.Tensor],
                temperature: float, share: list[float] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One micro-step's loss: the stage's terms and their weighted total (what backward runs on).
        On several processes `share` is this process's [label rows, real tokens] share of the global
        batch (distill.parallel.Processes.shares): each term is scaled by it, so that DDP's average
        of the gradients equals the one-process gradient."""
        terms = self.terms(student, teacher, batch, temperature)
        if share is not None:
            terms = {k: v * float(share[1] if k == "attention" else share[0]) for k, v in terms.items()}
        return terms, self.total(terms)

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of `terms` (fixed weights, or adaptive: distill.balancing.LossBalancer)."""
        return self.balancer(terms)

    def terms(self, student: nn.Module, teacher: nn.Module | None, batch: dict[str, torch.Tensor],
              temperature: float) -> dict[str, torch.Tensor]:
        """Each term of the stage, unweighted (a weight of 0 removes a term)."""
        # hooks on the matched layers only, for this forward pass (the student's only when cached)
        live = teacher if self.cache is None else None
        with self.matcher.capture(student, live) if self.matcher else contextlib.nullcontext():
            with self.prefix.feeding(student, batch) if self.prefix is not None else contextlib.nullcontext():
                s_out = model_outputs(student, batch, self.task)  # from the cached states of its frozen layers
            t_out = self.teacher_outputs(teacher, batch) if self.uses_teacher else {}
            losses: dict[str, torch.Tensor] = {}
            if "hard" in self.weights:
                losses["hard"] = L.hard_label_loss(s_out["logits"], s_out["labels"])
            if "kd" in self.weights:
                losses["kd"] = L.kd_loss(s_out["logits"], self.kd_target(t_out["logits"], batch, temperature),
                                         temperature)
            if "attention" in self.weights:
                losses["attention"] = self.matcher.loss(batch["attention_mask"], teacher=t_out.get("attention"))
        return losses

    def kd_target(self, teacher_logits: torch.Tensor, batch: dict[str, torch.Tensor], temperature: float):
        """The logits KD reads: the transformer's, or (stage `teacher_mix` set) the combined
        teacher's, mixed with the batch's `teacher_probs` (L.combined_teacher_logits) at each row's
        `teacher_weight` where the batch carries them (its language's w), else at w = teacher_mix."""
        w = self.cfg.teacher_mix
        if w is None or self.task != "classification":
            return teacher_logits
        if "teacher_probs" not in batch:
            raise RuntimeError(f"stage '{self.cfg.name}' has teacher_mix {w} but its batches carry no teacher_probs")
        return L.combined_teacher_logits(teacher_logits, batch["teacher_probs"], batch.get("teacher_weight", w),
                                         temperature)

    def teacher_outputs(self, teacher: nn.Module | None, batch: dict[str, torch.Tensor]) -> dict:
        """The teacher's `logits` (and, from the cache, its pooled maps under `attention`): read from
        the cache for the batch's example `index` when there is one, else a live forward pass (whose
        maps the matcher's teacher capture keeps). Without a KD term only the teacher's encoder runs:
        no head is called (a teacher may have none, see `representation_only`)."""
        if self.cache is not None:
            return self.cache.outputs(batch["index"], batch["attention_mask"], attention=self.matcher is not None)
        with torch.inference_mode():  # frozen, eval mode, never wrapped for gradients
            if "kd" not in self.weights:  # attention only: the capture keeps the maps of the encoder's layers
                teacher.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                return {}
            t_out = model_outputs(teacher, batch, self.task)
        return {k: v.clone() for k, v in t_out.items() if v is not None}  # leave inference mode
