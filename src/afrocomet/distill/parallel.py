"""Data parallelism through Accelerate: one student and one teacher per process, the global batch split.

`accelerate launch` (or `afrocomet run --num-processes N`) starts the processes; `PartialState`
joins them (gloo on CPU, NCCL on GPUs). Every process sees the same global batch (same order, same
MLM masks), keeps rows `rank::world` of it, and scales each loss term by its share of the rows the
term averages over, so that after averaging the gradients across processes they equal the one-process
gradient of the same global batch (up to float summation order). The loss values logged are the
global ones. One process (the main one) evaluates on dev, writes logs, checkpoints and the report;
its dev score is broadcast so every process takes the same early-stopping decision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


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

    @staticmethod
    def apply_shares(terms: dict[str, torch.Tensor], share: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if share is None:
            return terms
        return {k: v * float(share[1] if k == "attention" else share[0]) for k, v in terms.items()}

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return values
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        out = values.detach().to(device, copy=True)
        dist.all_reduce(out)
        return out.to(values.device)

    def mean_values(self, values: list[float]) -> list[float]:
        """The mean over processes of each value (the global loss from the scaled local ones)."""
        if self.world == 1:
            return values
        return (self.all_sum(torch.tensor(values, dtype=torch.float64)) / self.world).tolist()

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce the gradients (one flat buffer), divided by the number of processes.

        A parameter no process has a gradient for keeps `grad=None` (the optimizer skips it, as on
        one process); one that some processes lack counts as zeros there.
        """
        if self.world == 1:
            return
        import torch.distributed as dist

        has = self.all_sum(torch.tensor([p.grad is not None for p in params], dtype=torch.float32))
        active = [p for p, h in zip(params, has.tolist()) if h > 0]
        if not active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in active]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in active:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n

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


def launch_command(num_processes: int, args: list[str]) -> list[str]:
    """`accelerate launch` of `afrocomet ARGS` on this machine with `num_processes` processes
    (torch.distributed's launcher: NCCL on GPUs, gloo on CPU)."""
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "afrocomet", *args]


def processes() -> Processes:
    """This process's place among those `accelerate launch` started (one process without it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # joins the group: gloo on CPU, NCCL on GPUs
    return Processes(state.process_index, state.num_processes)
