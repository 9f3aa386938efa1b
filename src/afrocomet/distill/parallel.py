"""Data parallelism through Accelerate: one student and one teacher per process, the global batch split.

`accelerate launch` (or `afrocomet run --num-processes N`) starts the processes; `PartialState`
joins them (gloo on CPU, NCCL on GPUs). Every process sees the same global batch (same order, same
MLM masks), keeps rows `rank::world` of it, and scales each loss term by its share of the rows the
term averages over, so that after averaging the gradients across processes they equal the one-process
gradient of the same global batch (up to float summation order). The averaging is DDP's own
(`Synchronised`: the student and the loss module as one module prepared by `accelerate`): it
all-reduces gradient buckets while backward still runs. The loss values logged are the global ones.
One process (the main one) evaluates on dev, writes logs, checkpoints and the report; its dev score
is broadcast so every process takes the same early-stopping decision.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This process's rows of a global batch: [b, ...] -> [~b/world, ...]."""
        if self.world == 1:
            return batch
        return {k: v[self.rank::self.world] for k, v in batch.items()}

    def shares(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor | None:
        """world · local rows / global rows, for [label rows, real tokens] (None on one process).

        Label rows are what the hard and KD terms average over (masked tokens or texts); real tokens
        are what the attention term averages over.
        """
        if self.world == 1:
            return None
        labels = int((batch["mlm_labels"] != -100).sum()) if task == "mlm" else batch["input_ids"].shape[0]
        local = torch.tensor([float(labels), float(batch["attention_mask"].sum())])  # [2]
        return self.world * local / self.all_sum(local).clamp(min=1)

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return values
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        out = values.detach().to(device, copy=True)
        dist.all_reduce(out)
        return out.to(values.device)

    def mean_values(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over processes of each value (the global loss from the scaled local ones); stays
        on its device (no host transfer)."""
        if self.world == 1:
            return values
        return self.all_sum(values) / self.world

    def broadcast(self, value: float | None) -> float | None:
        """The main process's value on every process."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync_rng(self) -> None:
        """Every process takes the main process's torch generator states (after a stage, before
        anything random outside training, e.g. a new classifier head, which must match on all)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        box = [(torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None)]
        dist.broadcast_object_list(box, src=0)
        torch.set_rng_state(box[0][0])
        if box[0][1] is not None:
            torch.cuda.set_rng_state(box[0][1])

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


class _Joint(nn.Module):
    """The student and the loss module (attention projections, learned term weights) as one module:
    the unit DDP synchronises. Its forward is one micro-step: the share-weighted terms and their total."""

    def __init__(self, student: nn.Module, loss_fn: nn.Module):
        super().__init__()
        self.student, self.loss_fn = student, loss_fn

    def forward(self, teacher: nn.Module | None, batch: dict[str, torch.Tensor], temperature: float,
                share: list[float] | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if batch["input_ids"].shape[0]:
            return self.loss_fn(self.student, teacher, batch, temperature, share)
        # fewer rows than processes: no term but the learned weights' own, and a zero-gradient anchor
        # so that this process joins the backward all-reduce (the anchor is the student's first
        # trainable tensor, which another process always uses: it adds 0 to the average, as it should)
        anchor = next(p for p in self.student.parameters() if p.requires_grad)
        terms = {name: torch.zeros((), device=anchor.device) for name in self.loss_fn.weights}
        first = next(iter(terms))
        terms[first] = terms[first] + 0.0 * anchor.sum()
        return terms, self.loss_fn.total(terms)


class Synchronised:
    """`student` and `loss_fn` (a distill.trainer.HybridLoss) trained together, their gradients
    averaged over processes by DistributedDataParallel (through `accelerate`): buckets all-reduce
    while backward runs, and any parameter of either module is included. On one process: no DDP,
    the same operations as calling `loss_fn` directly. The teacher is an argument of each call, never
    part of the synchronised module (frozen, never broadcast). The modules keep their own state-dict
    keys: checkpoints save `student` and `loss_fn`, not this.

    Parameters unused in a step (a term switched off, a head the task does not use, a process
    without rows) are found each step (`find_unused_parameters`), so DDP does not wait for them.
    """

    def __init__(self, procs: Processes, student: nn.Module, loss_fn: nn.Module):
        self.procs = procs
        self.task = loss_fn.task
        self.module: nn.Module = _Joint(student, loss_fn)
        self._accelerator = None
        if procs.world > 1:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs

            # buffers keep DDP's default (rank 0's, sent before each forward: the student's are two
            # small constant id rows); `broadcast_buffers=False` is deprecated in torch >= 2.13 and
            # accelerate has no field for its successor `forward_sync_buffers`
            ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
            self._accelerator = Accelerator(cpu=not torch.cuda.is_available(), device_placement=False,
                                            kwargs_handlers=[ddp])
            self.module = self._accelerator.prepare_model(self.module)

    def __call__(self, teacher: nn.Module | None, batch: dict[str, torch.Tensor], temperature: float,
                 share: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """This process's share-weighted loss terms and their total (backward averages the gradients)."""
        # the shares as floats: DDP would copy a tensor argument to the GPU, and HybridLoss reads floats
        return self.module(teacher, batch, temperature, None if share is None else share.tolist())

    def sync(self, final: bool):
        """Context for a micro-step's forward and backward: gradients are synchronised on the `final`
        micro-step of an optimizer step only (earlier ones accumulate locally, `no_sync`)."""
        if self._accelerator is None or final:
            return contextlib.nullcontext()
        return self._accelerator.no_sync(self.module)


def launch_command(num_processes: int, args: list[str]) -> list[str]:
    """`accelerate launch` of `afrocomet ARGS` on this machine with `num_processes` processes
    (torch.distributed's launcher: NCCL on GPUs, gloo on CPU)."""
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "afrocomet", *args]


def leave() -> None:
    """Leave the process group, if this process joined one: each process at the end of its command.

    A process that only trains (not the main one) ends while the main one still evaluates and
    writes the report. Left to the interpreter's exit, the group's threads were torn down in no
    fixed order and a process could abort (`terminate called without an active exception`,
    SIGABRT), on which the launcher stopped the main process mid-report. Destroying the group
    here is local (no collective), so the main process, which needs no other process after
    training, is not held up."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def processes() -> Processes:
    """This process's place among those `accelerate launch` started (one process without it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # joins the group: gloo on CPU, NCCL on GPUs
    return Processes(state.process_index, state.num_processes)
