"""Gradient synchronisation on two processes (gloo, spawned here) through `parallel.Synchronised`.

Two processes share a global batch (rows `rank::2`, terms weighted by their shares) and must end an
optimizer step with the gradients one process computes on the whole batch: every trainable
parameter of the student AND of the loss module (attention projections, learned term weights).
Before the last micro-step of a gradient-accumulation step nothing is synchronised (`no_sync`):
each process still holds its own partial gradient. A process without rows (a 1-row batch) joins
the step without hanging DDP. Dropout is off, so both sides draw nothing random.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, SEQ = 120, 12


def _models():
    from afrocomet.config import StageConfig
    from afrocomet.distill.trainer import HybridLoss
    from afrocomet.models.build import build_model
    from afrocomet.models.presets import get_preset

    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
    student, teacher = (build_model(get_preset(name).to_config(vocab_size=VOCAB, **no_dropout), seed=0)
                        for name in ("tiny-student", "tiny-teacher"))
    teacher.eval().requires_grad_(False)
    cfg = StageConfig(name="sync", kind="distill-task", matching="projection", adaptive="uncertainty",
                      temperature=2.0)
    return student.train(), teacher, HybridLoss(cfg, student, teacher)


def _batch(rows: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, SEQ + 1, (rows,), generator=gen)
    mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()  # [rows, SEQ], padded on the right
    ids = torch.randint(5, VOCAB, (rows, SEQ), generator=gen) * mask + (1 - mask)  # pad id 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (rows,), generator=gen)}


def _grads(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor | None]:
    return {f"{prefix}.{name}": None if p.grad is None else p.grad.detach().clone()
            for prefix, module in modules.items() for name, p in module.named_parameters() if p.requires_grad}


def _steps(procs) -> list[dict[str, torch.Tensor | None]]:
    """Gradients after each micro-step: step 1 = two micro-batches of 8 rows (accumulated), step 2 =
    one batch of 1 row (no rows on the second process)."""
    from afrocomet.distill.parallel import Synchronised

    student, teacher, loss_fn = _models()
    synced = Synchronised(procs, student, loss_fn)
    modules = {"student": student, "loss": loss_fn}
    snapshots = []
    for batches in ([_batch(8, 1), _batch(8, 2)], [_batch(1, 3)]):
        for i, batch in enumerate(batches):
            local = procs.shard(batch)
            share = procs.shares(local, "classification")
            with synced.sync(final=i == len(batches) - 1):
                terms, total = synced(teacher, local, 2.0, share)
                (total / len(batches)).backward()
            snapshots.append(_grads(modules))
        for module in modules.values():
            module.zero_grad(set_to_none=True)
    return snapshots


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from afrocomet.distill.parallel import processes

    torch.save(_steps(processes()), os.path.join(out, f"rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world: int, out: str, timeout: float = 420.0) -> None:
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_worker, args=(world, _free_port(), out), nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail(f"{world} processes did not finish in {timeout:.0f} s (DDP waiting for a gradient?)")


def test_two_processes_synchronise_student_and_loss_module(tmp_path):
    from afrocomet.distill.parallel import Processes

    reference = _steps(Processes())  # one process, the whole global batches
    _spawn(2, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    loss_params = [name for name in reference[1] if name.startswith("loss.")]
    assert any("log_vars" in n for n in loss_params) and any("log_vars" not in n for n in loss_params)

    # after the first micro-step of an accumulation step: not synchronised, each process its own rows
    first = [ranks[r][0] for r in range(2)]
    assert not torch.allclose(first[0]["student.classifier.out_proj.weight"],
                              first[1]["student.classifier.out_proj.weight"])
    # after the last micro-step of each step: every process holds the one-process gradient
    for snapshot in (1, 2):
        for name, want in reference[snapshot].items():
            assert want is not None, name
            for r in range(2):
                got = ranks[r][snapshot][name]
                assert got is not None, (snapshot, r, name)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=f"step {snapshot}, rank {r}, {name}")
