"""What every stage of one run shares (Context), and the one place that runs a stage: a stage that
finished before is loaded, one with a checkpoint continues, any other is trained."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from afrocomet.config import RunConfig, StageConfig
from afrocomet.run.dev import dev_f1, dev_mlm
from afrocomet.run.inputs import RunData

log = logging.getLogger("afrocomet")


@dataclass
class Context:
    """What every stage of one run shares."""

    config: RunConfig
    data: RunData
    device: torch.device
    work: Path
    progress: bool = True
    results: dict[str, dict] = field(default_factory=dict)  # stage name -> StageResult dict
    alpha: float | None = None  # language sampling alpha chosen on dev (None: data.sampling_alpha)
    alpha_search: dict | None = None  # what the choice saw
    vocab_keep: list[int] | None = None  # old token ids kept by vocabulary trimming, if it ran
    teacher_notes: dict | None = None  # what the run changed for its teacher (e.g. no MLM head), for results.json
    # teacher preparation as results.json records it: vocab_trim, teacher_frozen, estimate, tokenizer coverage,
    # and (compare_init) the init modes compared and skipped
    preparation: dict = field(default_factory=dict)
    ngram: object | None = None  # the combined teacher's n-gram half (run.ngram_teacher.NgramTeacher), if any

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.data.labels))

    @property
    def pad_id(self) -> int:
        return self.data.tokenizer.pad_token_id

    @property
    def sampling_alpha(self) -> float:
        return self.config.data.sampling_alpha if self.alpha is None else self.alpha

    @property
    def state(self) -> Path:
        """What resuming needs (finished stages, checkpoints, tokenizer); see afrocomet.workdir."""
        from afrocomet.workdir import STATE

        return self.work / STATE

    def train(self, stage: StageConfig, model: nn.Module, *, teacher: nn.Module | None = None, tag: str = "",
              seed: int | None = None, alpha: float | None = None, caches_as: StageConfig | None = None) -> nn.Module:
        """Run one stage through the single training loop and record what happened.

        The one place that decides: a stage finished before is loaded (weights, result, RNG
        states), a stage with a checkpoint continues from its newest one, any other is trained.
        """
        from afrocomet.distill.checkpoint import is_finished, list_checkpoints, load_finished, save_finished
        from afrocomet.distill.parallel import processes
        from afrocomet.distill.trainer import train_stage

        name = f"{stage.name}{tag}"
        record, checkpoints = self.state / "stages" / name, self.state / "checkpoints" / name
        procs = processes()
        procs.barrier()  # every process sees the same finished stages and checkpoints
        if is_finished(record):
            self.results[name] = load_finished(record, model)
            log.info("stage %s finished before: loaded %s", name, record.relative_to(self.work))
            return model.to(self.device).eval()
        saved = list_checkpoints(checkpoints)
        if saved:
            log.info("stage %s resumes from %s", name, saved[-1].relative_to(self.work))
        task = stage.task
        data = self.data.unlabelled if task == "mlm" else self.data.train
        evaluate = dev_mlm(self.data.dev, self.data.tokenizer, self.device) if task == "mlm" else \
            dev_f1(self.data.dev, self.pad_id, self.device, keep=stage.kind == "teacher-finetune")
        alpha = (self.sampling_alpha if alpha is None else alpha) if task == "classification" else None
        t0 = time.perf_counter()
        log.info("stage %s (%s) starts", name, stage.kind)
        result = train_stage(stage, model, data, tokenizer=self.data.tokenizer, teacher=teacher, evaluate=evaluate,
                             out_dir=self.work / "logs" / name, device=self.device,
                             seed=self.config.seed if seed is None else seed, alpha=alpha, progress=self.progress,
                             checkpoint_dir=checkpoints, resume_from=saved[-1] if saved else None,
                             caches_as=caches_as)
        log.info("stage %s done: %d steps in %.1fs, dev %.4f", name, result.steps, time.perf_counter() - t0,
                 result.best_score if result.best_score is not None else float("nan"))
        if result.log:
            result.log = str(Path(result.log).relative_to(self.work))  # the run folder is renamed at the end
        self.results[name] = result.to_dict()
        if procs.is_main:
            save_finished(record, model, self.results[name])
            shutil.rmtree(checkpoints, ignore_errors=True)
        return model
