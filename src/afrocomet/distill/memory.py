"""Will one training step fit? A rough peak-memory estimate, before anything big is allocated.

`estimate_memory` adds up student weights, grads and AdamW states; teacher weights; activations of
both; captured attention maps of the matched layers; masked-LM logits at masked positions only, and
compares them with the memory available. `train_stage` calls `require_memory` first and stops with
a clear error if a step cannot fit; `afrocomet doctor` reports the estimate of every stage.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch
from torch import nn

from afrocomet.config import StageConfig
from afrocomet.errors import AfroCometError

GIB = 1024**3


def gib(n: float | None) -> str:
    """Bytes as GiB with two decimals ('?' if unknown)."""
    return "?" if n is None else f"{n / GIB:.2f} GiB"


def _config_of(model_or_config):
    return model_or_config.config if isinstance(model_or_config, nn.Module) else model_or_config


def _parameters(model_or_config, task: str) -> int:
    """Parameters of a model, or of the model a config describes for `task` (built on `meta`: no memory)."""
    from afrocomet.models.build import TASKS, count_parameters

    if isinstance(model_or_config, nn.Module):
        return count_parameters(model_or_config)
    with torch.device("meta"):
        model = TASKS[task].from_config(copy.deepcopy(model_or_config))
    return count_parameters(model)


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Free bytes on `device`: CUDA free memory, or Linux's MemAvailable; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _stores_maps(config, device: torch.device) -> bool:
    """Whether the attention kernel keeps [b, h, s, s] maps: eager always; SDPA on CPU (its math
    path when training with dropout) but not on CUDA (flash / memory-efficient kernels)."""
    return getattr(config, "_attn_implementation", "sdpa") == "eager" or device.type != "cuda"


def _activations(config, b: int, s: int, nbytes: int, device: torch.device, train: bool) -> int:
    """Encoder activations: all layers kept for backward (train), or one layer at a time (inference).

    Per layer and token about 10·hidden + 2·ffn values are kept (inputs of the Q/K/V, output and
    FFN projections, GELU, layer norms, dropout masks), plus 4·heads·s values per token for the
    scores, probabilities and dropout mask when the attention kernel materialises them.
    """
    h, ffn, heads, layers = config.hidden_size, config.intermediate_size, config.num_attention_heads, config.num_hidden_layers
    maps = heads * s * s if _stores_maps(config, device) else 0
    if train:
        return layers * b * (s * (10 * h + 2 * ffn) + 4 * maps) * nbytes + 4 * b * s * h * nbytes
    return b * (s * (6 * h + 2 * ffn) + 2 * maps) * nbytes


def _map_bytes(cfg: StageConfig, s_config, t_config, b: int, s: int) -> int:
    """Captured attention (fp32) of the matched layers and the loss built on it, per matching mode."""
    from afrocomet.distill.matching import build_matcher

    matcher = build_matcher(cfg.matching, s_config, t_config, cfg.layer_map, loss=cfg.attention_loss,
                            relation_heads=cfg.relation_heads)
    pairs, t_layers = len(matcher.layer_map), len(matcher.teacher_layers)
    hs, ht = s_config.num_attention_heads, t_config.num_attention_heads
    square = b * s * s
    # what stays alive until backward (measured by benchmarks/attention_memory.py), in b·s² units
    if cfg.matching == "mean":  # teacher head-mean maps; student probs per head + mean; KL's saved logs
        values = t_layers * square + pairs * (2 * hs + 1) * square + pairs * 4 * square
    elif cfg.matching == "projection":  # teacher per-head maps; student probs; one pair's projection + KL
        values = t_layers * ht * square + pairs * hs * square + 4 * ht * square
    else:  # relations: teacher Q/K/V; scores and log-softmaxes of one relation at a time (checkpointed)
        r = matcher.relation_heads
        values = t_layers * 3 * b * s * t_config.hidden_size + 6 * r * square
    return 4 * values


def estimate_memory(student_config, teacher_config, stage_cfg: StageConfig, seq_len: int,
                    device: str | torch.device = "cpu") -> dict:
    """Rough peak memory (bytes) of one training step of `stage_cfg` at batch_size x seq_len tokens:
    persistent state + the larger of (forward/backward transients, AdamW update temporaries).

    `student_config` is the model being trained (the teacher itself in teacher stages); configs or
    models (a model's own parameters are counted). `teacher_config` None: no teacher. Returns the
    parts, `total`, `available` (None if unknown) and `fits` (None if unknown).
    """
    device = torch.device(device)
    cfg, b, s = stage_cfg, stage_cfg.batch_size, seq_len
    task = cfg.task
    s_cfg = _config_of(student_config)
    act = 2 if device.type == "cuda" else 4  # bf16 autocast on CUDA, fp32 on CPU
    p_student = _parameters(student_config, task)
    parts = {
        # fp32 weights + grads + AdamW's two moments (+ bf16 weight copies made by autocast on CUDA)
        "student_states": (16 + (2 if device.type == "cuda" else 0)) * p_student,
        "student_activations": _activations(s_cfg, b, s, act, device, train=True),
        "teacher_weights": 0, "teacher_activations": 0, "attention_maps": 0, "logits": 0,
    }
    distills = teacher_config is not None and cfg.reads_teacher
    if teacher_config is not None:
        t_cfg = _config_of(teacher_config)
        parts["teacher_weights"] = 4 * _parameters(teacher_config, task)
        if distills:
            parts["teacher_activations"] = _activations(t_cfg, b, s, act, device, train=False)
            if cfg.attention_weight > 0:
                parts["attention_maps"] = _map_bytes(cfg, s_cfg, t_cfg, b, s)
    # the word-embedding gradient is dense: its backward makes one more [vocab, hidden] buffer, two when
    # the MLM decoder is tied to it (each use gets a gradient, then they are summed)
    parts["embedding_grads"] = 4 * s_cfg.vocab_size * s_cfg.hidden_size * (2 if task == "mlm" else 1)
    if task == "mlm":
        # logits at masked positions only, in fp32 in the losses: student logits, log-softmax and
        # their grads; with KD also the teacher's logits, their copy and both tempered log-softmaxes
        n = math.ceil(b * s * cfg.mlm_probability)
        parts["logits"] = 4 * n * s_cfg.vocab_size * (6 if distills and cfg.kd_weight > 0 else 3)
    # AdamW's foreach update makes about two parameter-sized temporaries, after backward has freed
    # the activations: the peak is the larger of the two phases
    parts["optimizer_step"] = 8 * p_student
    persistent = parts["student_states"] + parts["teacher_weights"]
    forward_backward = sum(parts[k] for k in ("student_activations", "teacher_activations", "attention_maps", "logits",
                                              "embedding_grads"))
    total = persistent + max(forward_backward, parts["optimizer_step"])
    available = available_memory(device)
    return {**parts, "total": total, "available": available, "fits": None if available is None else total <= available,
            "batch_size": b, "seq_len": s, "device": str(device)}


def _resident_bytes(model: nn.Module | None, device: torch.device) -> int:
    """Bytes of `model`'s weights that already sit on `device` (counted in what is not available)."""
    if model is None:
        return 0
    from afrocomet.bench import weights_bytes

    first = next(model.parameters(), None)
    if first is None or first.device.type != device.type:
        return 0
    return weights_bytes(model)


def memory_error(stage_cfg: StageConfig, estimate: dict, need: int) -> AfroCometError:
    parts = sorted(((k, v) for k, v in estimate.items() if k in (
        "student_states", "student_activations", "teacher_weights", "teacher_activations", "attention_maps", "logits",
        "embedding_grads", "optimizer_step")),
        key=lambda kv: -kv[1])[:3]
    biggest = ", ".join(f"{k.replace('_', ' ')} {gib(v)}" for k, v in parts)
    return AfroCometError(
        f"stage '{stage_cfg.name}' needs about {gib(need)} for one step ({biggest}) but only "
        f"{gib(estimate['available'])} is free on {estimate['device']}: lower batch_size (now {estimate['batch_size']}, "
        f"use grad_accum to keep the effective batch) or data.max_length (now {estimate['seq_len']})")


def require_memory(stage_cfg: StageConfig, student: nn.Module, teacher: nn.Module | None, seq_len: int,
                   device: str | torch.device, examples: int | None = None) -> dict:
    """Estimate a stage's peak memory on `device`; raise AfroCometError if it cannot fit.

    Weights already resident on `device` are not counted twice (free memory excludes them).
    `examples`: the size of the training set (a batch is never larger).
    """
    device = torch.device(device)
    if examples is not None and examples < stage_cfg.batch_size:
        stage_cfg = replace(stage_cfg, batch_size=examples)
    estimate = estimate_memory(student, teacher, stage_cfg, seq_len, device)
    need = estimate["total"] - _resident_bytes(student, device) - _resident_bytes(teacher, device)
    if estimate["available"] is not None and need > estimate["available"]:
        raise memory_error(stage_cfg, estimate, need)
    return estimate
