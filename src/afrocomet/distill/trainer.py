"""The one training loop. A stage is data plus weighted loss terms; the loop does not know which.

Every stage of a run goes through `train_stage`: teacher pretraining (MLM labels only), teacher
fine-tuning (gold labels only), stage 1 (MLM KD + attention + MLM labels), stage 2 (class KD +
attention + gold labels). Which terms exist follows from the stage's weights and whether a teacher
is given; a weight of 0 removes a term (it is neither computed nor logged).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from afrocomet.config import StageConfig
from afrocomet.data.batching import Encoded, MLMMasker, collate, epoch_order
from afrocomet.distill import losses as L
from afrocomet.distill.weighting import LossBalancer, temperature_at
from afrocomet.device import autocast_for, fused_ok
from afrocomet.errors import AfroCometError

MLM_KINDS = ("teacher-pretrain", "distill-mlm")
DISTILL_KINDS = ("distill-mlm", "distill-task")
PREFLIGHT_EXAMPLES = 4  # the doctor's invariants run on this many training examples before each distillation


@dataclass
class StageResult:
    name: str
    kind: str
    steps: int = 0
    epochs: float = 0.0
    seconds: float = 0.0
    terms: dict[str, dict[str, float]] = field(default_factory=dict)  # term -> first/last (mean of a window)
    best_score: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    log: str | None = None
    teacher_cache: str | None = None  # path of the teacher-output cache read instead of the teacher

    def to_dict(self) -> dict:
        return asdict(self)


def stage_task(kind: str) -> str:
    return "mlm" if kind in MLM_KINDS else "classification"


def model_outputs(model: nn.Module, batch: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    """The adaptor: a model's outputs as the small dict the losses see (`logits`, `labels`).

    For masked LM, hidden states are gathered at the masked positions *before* the vocabulary
    projection, so logits are [n_masked, vocab] and never [batch, seq, vocab].
    """
    if task == "mlm":
        hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        selected = batch["mlm_labels"] != -100  # [b, s]
        logits = model.lm_head(hidden[selected])  # [n_masked, vocab]
        return {"logits": logits, "labels": batch["mlm_labels"][selected]}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [b, classes]
    return {"logits": logits, "labels": batch.get("labels")}


def _param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "log_vars" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class HybridLoss(nn.Module):
    """The loss terms of one stage. Holds the attention matcher (whose parameters, in projection
    mode, train with the student) and the captures on the matched layers only."""

    def __init__(self, cfg: StageConfig, student: nn.Module, teacher: nn.Module | None):
        super().__init__()
        self.cfg = cfg
        self.task = stage_task(cfg.kind)
        weights = {"hard": cfg.hard_weight}
        if teacher is not None:
            weights.update(kd=cfg.kd_weight, attention=cfg.attention_weight)
        self.weights = {k: w for k, w in weights.items() if w > 0}
        if not self.weights:
            raise AfroCometError(f"stage '{cfg.name}': every loss weight is 0, nothing to train")
        self.balancer = LossBalancer(self.weights, cfg.adaptive)
        self.uses_teacher = "kd" in self.weights or "attention" in self.weights
        self.matcher = None
        self.cache = None  # a distill.cache.TeacherCache standing in for the teacher (set by train_stage)
        if "attention" in self.weights:
            from afrocomet.distill.matching import build_matcher

            self.matcher = build_matcher(cfg.matching, student.config, teacher.config, cfg.layer_map,
                                         loss=cfg.attention_loss, relation_heads=cfg.relation_heads)

    def forward(self, student: nn.Module, teacher: nn.Module | None, batch: dict[str, torch.Tensor],
                temperature: float) -> dict[str, torch.Tensor]:
        # hooks on the matched layers only, for this forward pass (the student's only when cached)
        live = teacher if self.cache is None else None
        with self.matcher.capture(student, live) if self.matcher else contextlib.nullcontext():
            s_out = model_outputs(student, batch, self.task)
            t_out = self.teacher_outputs(teacher, batch) if self.uses_teacher else {}
            losses: dict[str, torch.Tensor] = {}
            if "hard" in self.weights:
                losses["hard"] = L.hard_label_loss(s_out["logits"], s_out["labels"])
            if "kd" in self.weights:
                losses["kd"] = L.kd_loss(s_out["logits"], t_out["logits"], temperature)
            if "attention" in self.weights:
                losses["attention"] = self.matcher.loss(batch["attention_mask"], teacher=t_out.get("attention"))
        return losses

    def teacher_outputs(self, teacher: nn.Module | None, batch: dict[str, torch.Tensor]) -> dict:
        """The teacher's `logits` (and, from the cache, its pooled maps under `attention`): read from
        the cache for the batch's example `index` when there is one, else a live forward pass (whose
        maps the matcher's teacher capture keeps)."""
        if self.cache is not None:
            return self.cache.outputs(batch["index"], batch["attention_mask"], attention=self.matcher is not None)
        with torch.inference_mode():  # frozen, eval mode, never wrapped for gradients
            t_out = model_outputs(teacher, batch, self.task)
        return {k: v.clone() for k, v in t_out.items() if v is not None}  # leave inference mode


def reads_an_epoch(cfg: StageConfig, n_examples: int) -> bool:
    """True when stage `cfg` reads at least one epoch of its `n_examples` (a teacher cache pays off)."""
    examples = (cfg.max_steps or math.inf) * cfg.batch_size * cfg.grad_accum
    return min(examples, cfg.epochs * n_examples) >= n_examples


def _teacher_cache(cfg: StageConfig, student: nn.Module, teacher: nn.Module, train: Encoded, tokenizer,
                   device: torch.device, build: bool | None = None):
    """The teacher-output cache for this stage where it is exact (distill/cache.py), else None.
    Built when `build`, or (None) when the stage reads at least one epoch of examples; an existing
    one is always used."""
    from afrocomet.distill.cache import cached_layers, open_or_build

    layers = cached_layers(cfg, student.config, teacher.config)
    if layers is None:
        return None
    build = reads_an_epoch(cfg, len(train)) if build is None else build
    return open_or_build(teacher, train, tokenizer, layers, device=device, build=build,
                         batch_size=max(64, cfg.batch_size))


def preflight_invariants(cfg: StageConfig, student: nn.Module, teacher: nn.Module, train: Encoded, tokenizer) -> None:
    """The doctor's KD invariants on a few real examples before the first step (RNG and weights untouched)."""
    from afrocomet.distill.doctor import check_invariants

    batch = collate(train, list(range(min(PREFLIGHT_EXAMPLES, len(train)))), tokenizer.pad_token_id)
    failed = [c for c in check_invariants(student, teacher, tokenizer, cfg, batch) if not c.ok]
    if failed:
        raise AfroCometError(f"stage '{cfg.name}': pre-flight invariant check failed: "
                             + "; ".join(f"{c.name}: {c.detail}" for c in failed))


def _micro_step(synced, teacher: nn.Module | None, batch: dict[str, torch.Tensor], temperature: float, procs,
                device: torch.device, grad_accum: int, final: bool) -> dict[str, float]:
    """Forward and backward on this process's rows of one global batch; returns the global loss values
    (each term, then `total`). On several processes the terms are weighted by this process's share
    of the rows, and DDP averages the gradients during the `final` micro-step's backward
    (afrocomet.distill.parallel.Synchronised), so they equal the one-process ones."""
    share = procs.shares(batch, synced.task)
    with synced.sync(final):
        with autocast_for(device):
            terms, total = synced(teacher, batch, temperature, share)
        if total.requires_grad:
            (total / grad_accum).backward()
    values = {**{k: float(v.detach()) for k, v in terms.items()}, "total": float(total.detach())}
    return dict(zip(values, procs.mean_values(list(values.values()))))


def _open_log(out: Path | None, offset: int | None):
    """log.jsonl of a stage: new, or (resuming) cut back to what the checkpoint had written."""
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / "log.jsonl"
    if offset is None or not path.is_file():
        return open(path, "w", encoding="utf-8")
    with open(path, "r+b") as fh:
        fh.truncate(offset)
    return open(path, "a", encoding="utf-8")


def _log_offset(log_fh) -> int:
    if log_fh is None:
        return 0
    log_fh.flush()
    return log_fh.tell()


def _window_mean(values: list[float], first: bool, k: int = 10) -> float:
    part = values[:k] if first else values[-k:]
    return float(sum(part) / max(len(part), 1))


def train_stage(
    cfg: StageConfig,
    student: nn.Module,
    train: Encoded,
    *,
    tokenizer,
    teacher: nn.Module | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    out_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    alpha: float | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    build_cache: bool | None = None,
) -> StageResult:
    """Train `student` for one stage; returns what happened (steps, time, each term first/last).

    `evaluate(model) -> score` (higher is better) runs on dev each epoch (or every `eval_every`
    steps); the best state is restored at the end and training stops after `patience` evaluations
    without improvement. With `checkpoint_dir`, a checkpoint is written every `cfg.checkpoint_every`
    steps (the newest `cfg.keep_checkpoints` kept); `resume_from` (a checkpoint folder) continues
    exactly where it was written: same batches, masks, dropout, optimizer and scheduler state.
    `build_cache` overrides when a teacher-output cache is built (None: when the stage reads an epoch).
    """
    from afrocomet.distill.checkpoint import LoopState, load_checkpoint, save_checkpoint
    from afrocomet.distill.parallel import Synchronised, processes

    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    device = torch.device(device) if isinstance(device, str) else device
    if teacher is None and cfg.kind in DISTILL_KINDS and (cfg.kd_weight > 0 or cfg.attention_weight > 0):
        raise AfroCometError(f"stage '{cfg.name}' ({cfg.kind}) has KD/attention weights but no teacher")
    if len(train) == 0:
        raise AfroCometError(f"stage '{cfg.name}': no training examples")
    from afrocomet.distill.doctor import require_memory  # pre-flight: stop before a step that cannot fit

    require_memory(cfg, student, teacher, max(len(ids) for ids in train.ids), device, examples=len(train))
    torch.manual_seed(seed)
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
        teacher.requires_grad_(False)
    start = time.perf_counter()  # the stage's time includes building a teacher cache
    loss_fn = HybridLoss(cfg, student, teacher).to(device)
    if loss_fn.uses_teacher:  # only with a teacher (HybridLoss)
        preflight_invariants(cfg, student, teacher, train, tokenizer)
        loss_fn.cache = _teacher_cache(cfg, student, teacher, train, tokenizer, device, build_cache)
    masker = MLMMasker(tokenizer, cfg.mlm_probability, seed=seed) if loss_fn.task == "mlm" else None

    batches_per_epoch = math.ceil(len(train) / cfg.batch_size)
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    trainable = [student, loss_fn]
    # fused AdamW: one kernel per step instead of a dozen per tensor (CPU and CUDA since torch 2.4)
    optimizer = torch.optim.AdamW(_param_groups(trainable, cfg.weight_decay), lr=cfg.lr, fused=fused_ok(device))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    eval_every = cfg.eval_every or steps_per_epoch

    procs = processes()
    if not procs.is_main:
        out_dir = None  # logs, checkpoints and the report are the main process's
    loop = LoopState()
    if resume_from is not None:  # after every module is built: the checkpoint restores all generators
        loop = load_checkpoint(Path(resume_from), student=student, loss_fn=loss_fn, optimizer=optimizer,
                               scheduler=scheduler, masker=masker)
    synced = Synchronised(procs, student, loss_fn)  # DDP over the student and the loss module (several processes)
    out = Path(out_dir) if out_dir is not None else None
    log_fh = _open_log(out, loop.log_offset if resume_from is not None else None)
    result = StageResult(cfg.name, cfg.kind, log=None if out is None else str(out / "log.jsonl"),
                         teacher_cache=None if loss_fn.cache is None else str(loss_fn.cache.path))
    result.best_step = loop.best_step
    history = loop.history
    best_state, bad_evals = loop.best_state, loop.bad_evals
    best_score = -math.inf if loop.best_score is None else loop.best_score
    start -= loop.seconds  # a resumed stage counts the time before its checkpoint
    bar = tqdm(total=total_steps, initial=loop.step, desc=cfg.name, disable=not (progress and procs.is_main),
               leave=False, dynamic_ncols=True)
    step, micro, epoch, skip = loop.step, loop.micro, loop.epoch, loop.batch_index
    try:
        while step < total_steps:
            for batch_index, index in enumerate(epoch_order(train, cfg.batch_size, seed, epoch, alpha=alpha)):
                if batch_index < skip:
                    continue  # consumed before the checkpoint this run resumes from
                batch = collate(train, index, tokenizer.pad_token_id)
                if loss_fn.cache is not None:
                    batch["index"] = torch.tensor(index)  # [b] rows of the teacher cache
                if masker is not None:
                    batch = masker(batch)
                    if not (batch["mlm_labels"] != -100).any():
                        continue  # nothing masked in this (tiny) batch: no MLM signal
                batch = {k: v.to(device) for k, v in procs.shard(batch).items()}
                temperature = temperature_at(step, total_steps, cfg.temperature, cfg.final_temperature)
                values = _micro_step(synced, teacher, batch, temperature, procs, device, cfg.grad_accum,
                                     final=(micro + 1) % cfg.grad_accum == 0)
                micro += 1
                for name, value in values.items():
                    history.setdefault(name, []).append(value)
                if micro % cfg.grad_accum:
                    continue
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_([p for m in trainable for p in m.parameters()], cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], "temperature": temperature,
                          **{k: v[-1] for k, v in history.items()}}
                if log_fh is not None:
                    log_fh.write(json.dumps(record) + "\n")
                bar.update(1)
                if step % cfg.log_every == 0 or step == total_steps:
                    bar.set_postfix({k: f"{v[-1]:.3f}" for k, v in history.items()})
                if evaluate is not None and (step % eval_every == 0 or step == total_steps):
                    # the callback gets its own RNG state: whatever it draws cannot change training
                    score = None
                    if procs.is_main:  # the main process evaluates; every process takes its decision
                        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                            score = float(evaluate(student))
                    score = procs.broadcast(score)
                    student.train()
                    if log_fh is not None:
                        log_fh.write(json.dumps({"step": step, "dev_score": score}) + "\n")
                    if score > best_score:
                        best_score, bad_evals, result.best_step = score, 0, step
                        best_state = {k: v.detach().to("cpu", copy=True) for k, v in student.state_dict().items()}
                    else:
                        bad_evals += 1
                        if cfg.patience and bad_evals >= cfg.patience:
                            result.stopped_early = True
                            break
                if step >= total_steps:
                    break
                if checkpoint_dir is not None and procs.is_main and cfg.checkpoint_every and \
                        step % cfg.checkpoint_every == 0:
                    state = LoopState(step, micro, epoch, batch_index + 1, history,
                                      None if best_state is None else best_score, result.best_step, bad_evals,
                                      time.perf_counter() - start, _log_offset(log_fh), best_state)
                    save_checkpoint(Path(checkpoint_dir), state, student=student, loss_fn=loss_fn,
                                    optimizer=optimizer, scheduler=scheduler, masker=masker,
                                    keep=cfg.keep_checkpoints)
            epoch, skip = epoch + 1, 0
            if result.stopped_early:
                break
    finally:
        bar.close()
        if log_fh is not None:
            log_fh.close()
    if best_state is not None:
        student.load_state_dict(best_state)
        result.best_score = best_score
    procs.sync_rng()  # processes drew dropout for shards of other sizes: continue from one state
    student.eval()
    result.steps = step
    result.epochs = round(step / steps_per_epoch, 3)
    result.seconds = round(time.perf_counter() - start, 2)
    result.terms = {k: {"first": _window_mean(v, True), "last": _window_mean(v, False)} for k, v in history.items()}
    return result
