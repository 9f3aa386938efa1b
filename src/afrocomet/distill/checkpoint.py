"""Checkpoints inside a stage, and records of finished stages: what an exact resume needs.

A checkpoint folder (`step-00000120/`) is written whole or not at all (`afrocomet.io.atomic_dir`):

- `model.safetensors`      the student (tied weights handled by `safetensors.torch.save_model`)
- `loss.safetensors`       the loss module's parameters (projection matcher, uncertainty weights)
- `optimizer.safetensors`  the optimizer's per-parameter tensors (AdamW moments and step counts)
- `best.safetensors`       the best weights seen by early stopping (absent before the first evaluation)
- `rng.safetensors`        torch CPU/CUDA generator states and the MLM masker's generator
- `state.json`             the rest: data-order position, optimizer groups, scheduler, numpy and
                           python RNG states, loss history, early-stopping state, log offset

A finished stage is recorded as `model.safetensors` + `result.json` + the RNG states at its end,
so skipping it on resume leaves every generator exactly where training it would have.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from afrocomet.errors import AfroCometError
from afrocomet.io import atomic_dir, atomic_write_json

STEP_PREFIX = "step-"


# ----------------------------------------------------------------------------- RNG states


def rng_state(masker=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Every generator training draws from: (tensors for safetensors, JSON-able rest)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = state
    if masker is not None:
        tensors["masker"] = masker.collator.generator.get_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict, masker=None) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("torch_cuda.")),
                                       key=lambda k: int(k.split(".")[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if masker is not None:
        masker.collator.generator.set_state(tensors["masker"])
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ----------------------------------------------------------------------------- optimizer as tensors + JSON


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _own(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies that share no storage (safetensors refuses shared tensors)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


# ----------------------------------------------------------------------------- in-stage checkpoints


@dataclass
class LoopState:
    """Where the loop is: everything a checkpoint holds besides modules and generators."""

    step: int = 0  # optimizer steps done
    micro: int = 0  # backward passes done (grad accumulation)
    epoch: int = 0
    batch_index: int = 0  # batches of `epoch` already consumed
    history: dict[str, list[float]] = field(default_factory=dict)
    best_score: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    seconds: float = 0.0  # training time before this segment
    log_offset: int = 0  # bytes of log.jsonl written at the checkpoint
    best_state: dict[str, torch.Tensor] | None = None


def checkpoint_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def list_checkpoints(stage_dir: Path) -> list[Path]:
    """Complete checkpoints of a stage, oldest first (temporary folders of a killed write are ignored)."""
    if not stage_dir.is_dir():
        return []
    found = [p for p in stage_dir.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)
             and p.name[len(STEP_PREFIX):].isdigit() and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def save_checkpoint(stage_dir: Path, loop: LoopState, *, student: nn.Module, loss_fn: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, masker=None, keep: int = 2) -> Path:
    """Write one checkpoint atomically, then keep only the newest `keep`."""
    folder = stage_dir / checkpoint_name(loop.step)
    opt_tensors, opt_meta = _optimizer_split(optimizer)
    rng_tensors, rng_meta = rng_state(masker)
    meta = {k: v for k, v in loop.__dict__.items() if k != "best_state"}
    meta.update(optimizer=opt_meta, scheduler=scheduler.state_dict(), rng=rng_meta,
                balancer_running=loss_fn.balancer.running_sizes())
    with atomic_dir(folder) as tmp:
        save_model(student, str(tmp / "model.safetensors"))
        save_file(_own(loss_fn.state_dict()), str(tmp / "loss.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        if loop.best_state is not None:
            save_file(_own(loop.best_state), str(tmp / "best.safetensors"))
        atomic_write_json(tmp / "state.json", meta)
    for old in list_checkpoints(stage_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: Path, *, student: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, masker=None) -> LoopState:
    """Put every module, the optimizer, the scheduler and every generator back as they were saved."""
    try:
        meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        missing, unexpected = load_model(student, str(folder / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise AfroCometError(f"checkpoint weights do not fit the model (missing {sorted(missing)[:3]}, "
                                 f"unexpected {sorted(unexpected)[:3]})", path=folder)
        loss_fn.load_state_dict(load_file(str(folder / "loss.safetensors")))
        optimizer.load_state_dict(_optimizer_join(load_file(str(folder / "optimizer.safetensors")), meta["optimizer"]))
        scheduler.load_state_dict(meta["scheduler"])
        set_rng_state(load_file(str(folder / "rng.safetensors")), meta["rng"], masker)
        best = folder / "best.safetensors"
        best_state = load_file(str(best)) if best.is_file() else None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise AfroCometError(f"unreadable checkpoint: {exc}".splitlines()[0], path=folder) from exc
    if hasattr(loss_fn.balancer, "running"):
        loss_fn.balancer.running = dict(meta["balancer_running"])
    fields = {k: meta[k] for k in LoopState.__dataclass_fields__ if k in meta}
    return LoopState(**fields, best_state=best_state)


# ----------------------------------------------------------------------------- finished stages


def save_finished(folder: Path, model: nn.Module, result: dict) -> Path:
    """Record a finished stage: its final weights, its result and the RNG states at its end."""
    tensors, meta = rng_state()
    with atomic_dir(folder) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "rng.safetensors"))
        atomic_write_json(tmp / "result.json", {"result": result, "rng": meta})
    return folder


def is_finished(folder: Path) -> bool:
    return (folder / "result.json").is_file() and (folder / "model.safetensors").is_file()


def load_finished(folder: Path, model: nn.Module) -> dict:
    """Load a finished stage's weights into `model`, restore the RNG states; returns the result."""
    try:
        saved = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
        tensors = load_file(str(folder / "rng.safetensors"))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise AfroCometError(f"unreadable finished-stage record: {exc}".splitlines()[0], path=folder) from exc
    if missing or unexpected:
        raise AfroCometError(f"saved stage weights do not fit the model (missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]})", path=folder)
    set_rng_state(tensors, saved["rng"])
    return saved["result"]
