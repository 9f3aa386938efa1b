"""The one training loop. A stage is data plus weighted loss terms; the loop does not know which.

Every stage of a run goes through `train_stage`: teacher pretraining (MLM labels only), teacher
fine-tuning (gold labels only), stage 1 (MLM KD + attention + MLM labels), stage 2 (class KD +
attention + gold labels). Which terms exist follows from the stage's weights and whether a teacher
is given; a weight of 0 removes a term (it is neither computed nor logged).

`train_stage` reads as one optimisation step: a batch, forward and backward (`_micro_step`), and
every `grad_accum` batches the optimizer's step. Its collaborators each have one job: the adaptor
and loss module (objective.py), the step plan and optimizer (optimization.py), dev evaluation and
early stopping (early_stopping.py), the log and progress bar (steplog.py), checkpoints
(checkpoint.py), processes (parallel.py), the memory and invariant pre-flight (memory.py,
invariants.py), the teacher-output and frozen-prefix caches (cache.py, frozen_prefix.py). None of them imports the doctor (doctor.py imports the trainer).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from afrocomet.config import StageConfig
from afrocomet.data.batching import Encoded, MLMMasker, collate, epoch_order
from afrocomet.device import autocast_for
from afrocomet.distill.checkpoint import LoopState, load_checkpoint, save_checkpoint
from afrocomet.distill.early_stopping import EarlyStopping
from afrocomet.distill.invariants import preflight_invariants
from afrocomet.distill.memory import require_memory
from afrocomet.distill.objective import HybridLoss
from afrocomet.distill.optimization import StepPlan, build_optimizer, temperature_at
from afrocomet.distill.parallel import Synchronised, processes
from afrocomet.distill.steplog import StepLog
from afrocomet.errors import AfroCometError


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
    skipped_batches: int = 0  # masked-LM batches with no masked token (no signal), skipped and not counted as steps
    frozen_cache: dict | None = None  # the frozen-prefix cache read instead of the frozen layers: path, layers, dtype

    def to_dict(self) -> dict:
        return asdict(self)


def reads_an_epoch(cfg: StageConfig, n_examples: int) -> bool:
    """True when stage `cfg` reads at least one epoch of its `n_examples` (a teacher cache pays off)."""
    examples = (cfg.max_steps or math.inf) * cfg.batch_size * cfg.grad_accum
    return min(examples, cfg.epochs * n_examples) >= n_examples


def _teacher_cache(cfg: StageConfig, student: nn.Module, teacher: nn.Module, train: Encoded, tokenizer,
                   device: torch.device, build: bool):
    """The teacher-output cache (fp16) for this stage where it applies (distill/cache.py), else None.
    Built when `build`; an existing one is always used."""
    from afrocomet.distill.cache import cached_layers, open_or_build

    layers = cached_layers(cfg, student.config, teacher.config)
    if layers is None:
        return None
    return open_or_build(teacher, train, tokenizer, layers, device=device, build=build,
                         batch_size=max(64, cfg.batch_size))


def prepare_teacher_cache(cfg: StageConfig, student: nn.Module, teacher: nn.Module, train: Encoded, tokenizer,
                          device: torch.device | str) -> None:
    """Build, ahead of training, the teacher-output cache stage `cfg` would read (where one applies and
    the stage reads an epoch): run.jobs builds it once at the run's threads before rows that read it
    train side by side (each would otherwise build it, at once, on its share of the threads)."""
    if cfg.reads_teacher and reads_an_epoch(cfg, len(train)):
        _teacher_cache(cfg, student, teacher, train, tokenizer, torch.device(device), build=True)


def _frozen_prefix(cfg: StageConfig, model: nn.Module, train: Encoded, tokenizer, loss_fn: HybridLoss,
                   device: torch.device, build: bool):
    """The frozen-prefix cache (distill/frozen_prefix.py) of `model` for this stage where it applies:
    a classification stage with no attention term (no hooks on the student's layers) whose model has
    its embeddings and lowest N >= 1 layers frozen (embeddings alone: their forward is a lookup,
    not worth gigabytes of states); built when `build`."""
    from afrocomet.distill.frozen_prefix import frozen_layers, open_or_build

    if not cfg.frozen_cache or loss_fn.task != "classification" or loss_fn.matcher is not None:
        return None
    n = frozen_layers(model)
    if not n:
        return None
    return open_or_build(model, train, tokenizer.pad_token_id, n, device=device, build=build,
                         batch_size=max(64, cfg.batch_size))


def _start(cfg: StageConfig, student: nn.Module, teacher: nn.Module | None, train: Encoded, tokenizer,
           device: torch.device, seed: int, build: bool) -> tuple[HybridLoss, MLMMasker | None, float]:
    """Everything before the first batch: the stage's sanity and memory checks, the seed, the models'
    modes, the loss module, the teacher's pre-flight invariants and output cache, the MLM masker.
    Returns (loss, masker, start time); the stage's time includes building a teacher cache (or the
    frozen-prefix cache of the model it trains)."""
    if teacher is None and cfg.reads_teacher:
        raise AfroCometError(f"stage '{cfg.name}' ({cfg.kind}) has KD/attention weights but no teacher")
    if len(train) == 0:
        raise AfroCometError(f"stage '{cfg.name}': no training examples")
    # pre-flight: stop before a step that cannot fit
    require_memory(cfg, student, teacher, max(len(ids) for ids in train.ids), device, examples=len(train))
    torch.manual_seed(seed)
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
        teacher.requires_grad_(False)
    start = time.perf_counter()
    loss_fn = HybridLoss(cfg, student, teacher).to(device)
    if loss_fn.uses_teacher:  # only with a teacher (HybridLoss)
        preflight_invariants(cfg, student, teacher, train, tokenizer)
        loss_fn.cache = _teacher_cache(cfg, student, teacher, train, tokenizer, device, build)
    loss_fn.prefix = _frozen_prefix(cfg, student, train, tokenizer, loss_fn, device, build)
    masker = MLMMasker(tokenizer, cfg.mlm_probability, seed=seed) if loss_fn.task == "mlm" else None
    return loss_fn, masker, start


def _batches(train: Encoded, cfg: StageConfig, tokenizer, loop: LoopState, *, seed: int, alpha: float | None,
             masker: MLMMasker | None, cached: bool, procs, device: torch.device, skipped: list[int]):
    """The stage's batches from where `loop` stands, epoch after epoch: (epoch, batch index, this
    process's rows on `device`; masked for MLM, with the teacher cache's row `index` when `cached`).
    A masked-LM batch in which nothing got masked is skipped and counted in `skipped[0]`."""
    epoch, skip = loop.epoch, loop.batch_index
    while True:
        for batch_index, index in enumerate(epoch_order(train, cfg.batch_size, seed, epoch, alpha=alpha)):
            if batch_index < skip:
                continue  # consumed before the checkpoint this run resumes from
            batch = collate(train, index, tokenizer.pad_token_id)
            if cached:
                batch["index"] = torch.tensor(index)  # [b] rows of the teacher / frozen-prefix cache
            if masker is not None:
                batch = masker(batch)
                if not (batch["mlm_labels"] != -100).any():
                    skipped[0] += 1
                    continue  # nothing masked in this (tiny) batch: no MLM signal
            yield epoch, batch_index, {k: v.to(device) for k, v in procs.shard(batch).items()}
        epoch, skip = epoch + 1, 0


def log_skipped(cfg: StageConfig, n: int) -> None:
    logging.getLogger("afrocomet").warning(
        "stage '%s': skipped %d masked-LM batch(es) in which no token was masked (mlm_probability %g on short "
        "texts); they are not counted as steps", cfg.name, n, cfg.mlm_probability)


def _micro_step(synced, teacher: nn.Module | None, batch: dict[str, torch.Tensor], temperature: float, procs,
                device: torch.device, grad_accum: int, final: bool) -> dict[str, torch.Tensor]:
    """Forward and backward on this process's rows of one global batch; returns the global loss values
    (each term, then `total`) as detached 0-dim tensors on the device (StepLog reads them to the host
    every few steps: no device sync per micro-step). On several processes the terms are weighted by this process's share
    of the rows, and DDP averages the gradients during the `final` micro-step's backward
    (afrocomet.distill.parallel.Synchronised), so they equal the one-process ones."""
    share = procs.shares(batch, synced.task)
    with synced.sync(final):
        with autocast_for(device):
            terms, total = synced(teacher, batch, temperature, share)
        if total.requires_grad:
            (total / grad_accum).backward()
    values = torch.stack([v.detach().double() for v in (*terms.values(), total)])
    return dict(zip([*terms, "total"], procs.mean_values(values)))


def train_stage(cfg: StageConfig, student: nn.Module, train: Encoded, *, tokenizer, teacher: nn.Module | None = None,
                evaluate: Callable[[nn.Module], float] | None = None, out_dir: str | Path | None = None,
                device: torch.device | str = "cpu", seed: int = 0, alpha: float | None = None, progress: bool = True,
                checkpoint_dir: str | Path | None = None, resume_from: str | Path | None = None,
                caches_as: StageConfig | None = None) -> StageResult:
    """Train `student` for one stage; returns what happened (steps, time, each term first/last).

    `evaluate(model) -> score` (higher is better) runs on dev each epoch (or every `eval_every`
    steps); the best state is restored at the end and training stops after `patience` evaluations
    without improvement. With `checkpoint_dir`, a checkpoint is written every `cfg.checkpoint_every`
    steps (the newest `cfg.keep_checkpoints` kept); `resume_from` (a checkpoint folder) continues
    exactly where it was written: same batches, masks, dropout, optimizer and scheduler state.
    A teacher-output or frozen-prefix cache is built when the stage reads at least an epoch of its
    examples (it pays off), or, given `caches_as`, when that stage would (a short probe of a stage
    builds and reads the caches the stage itself will); an existing one is always read.
    """
    device = torch.device(device) if isinstance(device, str) else device
    build = reads_an_epoch(caches_as or cfg, len(train))
    loss_fn, masker, start = _start(cfg, student, teacher, train, tokenizer, device, seed, build)
    plan, trainable = StepPlan.of(cfg, len(train)), [student, loss_fn]
    optimizer, scheduler = build_optimizer(cfg, trainable, plan.total_steps, device)
    parts = dict(student=student, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler, masker=masker)
    procs = processes()  # logs, checkpoints and the report are the main process's
    # after every module is built: the checkpoint restores all generators
    loop = LoopState() if resume_from is None else load_checkpoint(Path(resume_from), **parts)
    synced = Synchronised(procs, student, loss_fn)  # DDP over the student and the loss module (several processes)
    log = StepLog(out_dir if procs.is_main else None, loop, resumed=resume_from is not None, name=cfg.name,
                  total_steps=plan.total_steps, progress_every=cfg.progress_every, progress=progress and procs.is_main)
    stopper = EarlyStopping(evaluate, plan.eval_every, plan.total_steps, cfg.patience, loop, procs, device,
                            min_steps=cfg.min_steps)
    start -= loop.seconds  # a resumed stage counts the time before its checkpoint
    skipped = [0]
    batches = _batches(train, cfg, tokenizer, loop, seed=seed, alpha=alpha, masker=masker,
                       cached=loss_fn.cache is not None or loss_fn.prefix is not None, procs=procs, device=device,
                       skipped=skipped)
    step, micro = loop.step, loop.micro
    try:
        while step < plan.total_steps:
            epoch, batch_index, batch = next(batches)
            temperature = temperature_at(step, plan.total_steps, cfg.temperature, cfg.final_temperature)
            final = (micro + 1) % cfg.grad_accum == 0  # DDP averages the gradients in this micro-step's backward
            log.add(_micro_step(synced, teacher, batch, temperature, procs, device, cfg.grad_accum, final))
            micro += 1
            if not final:
                continue
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_([p for m in trainable for p in m.parameters()], cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            log.step(step, epoch, scheduler.get_last_lr()[0], temperature)
            if stopper.due(step):
                score = stopper.score(student)
                log.dev_score(step, score)
                if stopper.update(score, step, student):
                    break
            if step < plan.total_steps and checkpoint_dir is not None and procs.is_main and cfg.checkpoint_every \
                    and step % cfg.checkpoint_every == 0:
                log.flush()
                state = LoopState(step, micro, epoch, batch_index + 1, log.history, stopper.kept_score(),
                                  stopper.best_step, stopper.bad_evals, time.perf_counter() - start, log.offset(),
                                  stopper.best_state)
                save_checkpoint(Path(checkpoint_dir), state, **parts, keep=cfg.keep_checkpoints)
    finally:
        log.close()
    best_score = stopper.restore(student)
    procs.sync_rng()  # processes drew dropout for shards of other sizes: continue from one state
    student.eval()
    if skipped[0]:
        log_skipped(cfg, skipped[0])
    return StageResult(cfg.name, cfg.kind, step, round(step / plan.steps_per_epoch, 3),
                       round(time.perf_counter() - start, 2), log.terms(), best_score, stopper.best_step,
                       stopper.stopped, log.path, None if loss_fn.cache is None else str(loss_fn.cache.path), skipped[0],
                       frozen_cache=None if loss_fn.prefix is None else loss_fn.prefix.describe())
