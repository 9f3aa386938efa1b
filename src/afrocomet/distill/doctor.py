"""Pre-flight checks for distillation (`afrocomet doctor`): will it fit, and do the invariants hold?

- `estimate_memory`: a rough peak-memory estimate of one training step (student weights, grads and
  AdamW states; teacher weights; activations of both; captured attention maps of the matched layers;
  masked-LM logits at masked positions only) against the memory available, before anything big
  is allocated. `train_stage` calls `require_memory` first and stops with a clear error if a
  step cannot fit.
- `check_invariants` (one real batch): teacher frozen and in eval mode; the KD term equals
  T² · KL computed by hand; padding appended to the batch changes no term; captured maps sum to 1
  over real keys, are 0 on padded keys and are the pre-dropout probabilities; every weighted term
  sends gradient to the student and none to the teacher.
- `overfit_check`: the real training loop, a few steps on two batches, lowers the loss clearly
  and leaves the teacher untouched.
- `run_doctor(config)`: all of the above for a run config, on small copies of its models.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from afrocomet.config import RunConfig, StageConfig, validate
from afrocomet.data.batching import Encoded, MLMMasker, collate, encode
from afrocomet.device import resolve_device
from afrocomet.distill.trainer import DISTILL_KINDS, HybridLoss, model_outputs, stage_task, train_stage
from afrocomet.errors import AfroCometError
from afrocomet.models.attention import AttentionCapture, encoder_layers, split_heads
from afrocomet.models.presets import is_preset
from afrocomet.tokenizer import tokenizer_for

GIB = 1024**3
TEACHER_KINDS = ("teacher-pretrain", "teacher-finetune")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    stage: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.2f} GiB"


# ----------------------------------------------------------------------------- memory


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
    task = stage_task(cfg.kind)
    s_cfg = _config_of(student_config)
    act = 2 if device.type == "cuda" else 4  # bf16 autocast on CUDA, fp32 on CPU
    p_student = _parameters(student_config, task)
    parts = {
        # fp32 weights + grads + AdamW's two moments (+ bf16 weight copies made by autocast on CUDA)
        "student_states": (16 + (2 if device.type == "cuda" else 0)) * p_student,
        "student_activations": _activations(s_cfg, b, s, act, device, train=True),
        "teacher_weights": 0, "teacher_activations": 0, "attention_maps": 0, "logits": 0,
    }
    distills = teacher_config is not None and cfg.kind in DISTILL_KINDS and (cfg.kd_weight > 0 or cfg.attention_weight > 0)
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
    biggest = ", ".join(f"{k.replace('_', ' ')} {_gib(v)}" for k, v in parts)
    return AfroCometError(
        f"stage '{stage_cfg.name}' needs about {_gib(need)} for one step ({biggest}) but only "
        f"{_gib(estimate['available'])} is free on {estimate['device']}: lower batch_size (now {estimate['batch_size']}, "
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


# ----------------------------------------------------------------------------- invariants


@contextlib.contextmanager
def _mode(model: nn.Module, train: bool):
    was = model.training
    model.train(train)
    try:
        yield
    finally:
        model.train(was)


def _prepare_batch(batch: dict[str, torch.Tensor], tokenizer, cfg: StageConfig, device) -> dict[str, torch.Tensor]:
    """The batch as the loop sees it: masked for MLM stages (at least one masked token), on `device`."""
    batch = dict(batch)
    if stage_task(cfg.kind) == "mlm" and "mlm_labels" not in batch:
        batch = MLMMasker(tokenizer, cfg.mlm_probability, seed=0)(batch)
        if not (batch["mlm_labels"] != -100).any():  # a tiny batch can draw no mask at all
            batch["mlm_labels"][:, 1] = batch["input_ids"][:, 1]
            batch["input_ids"][:, 1] = tokenizer.mask_token_id
    elif stage_task(cfg.kind) == "classification" and "labels" not in batch:
        raise AfroCometError(f"stage '{cfg.name}': the doctor's batch has no labels")
    return {k: v.to(device) for k, v in batch.items()}


def pad_batch(batch: dict[str, torch.Tensor], pad_id: int, extra: int = 5) -> dict[str, torch.Tensor]:
    """The same batch with `extra` padding columns appended to every row."""
    fill = {"input_ids": pad_id, "attention_mask": 0, "mlm_labels": -100}
    out = {}
    for key, value in batch.items():
        if value.dim() == 2:
            value = torch.cat([value, value.new_full((value.shape[0], extra), fill[key])], dim=1)
        out[key] = value
    return out


def check_teacher_frozen(teacher: nn.Module) -> Check:
    in_train = [n or "(model)" for n, m in teacher.named_modules() if m.training]
    trainable = [n for n, p in teacher.named_parameters() if p.requires_grad]
    with_grad = [n for n, p in teacher.named_parameters() if p.grad is not None]
    problems = []
    if in_train:
        problems.append(f"{len(in_train)} modules in train mode (dropout on), e.g. {in_train[0]}")
    if trainable:
        problems.append(f"{len(trainable)} parameters require grad, e.g. {trainable[0]}")
    if with_grad:
        problems.append(f"{len(with_grad)} parameters hold a gradient, e.g. {with_grad[0]}")
    n = sum(1 for _ in teacher.parameters())
    return Check("teacher frozen, eval mode", not problems, "; ".join(problems) or f"eval mode, {n} tensors frozen, no grads")


def check_kd_temperature(loss_fn: HybridLoss, student, teacher, batch, temperature: float) -> Check:
    """The trainer's KD term equals T² · mean over rows of KL(softmax(t/T) || softmax(s/T)) by hand."""
    s = model_outputs(student, batch, loss_fn.task)["logits"].double()  # [rows, C]
    with torch.inference_mode():
        t = model_outputs(teacher, batch, loss_fn.task)["logits"].double().clone()
    shown, ok = [], True
    for T in sorted({float(temperature), 4.0}):
        got = float(loss_fn(student, teacher, batch, T)["kd"])
        p_t = torch.softmax(t / T, dim=-1)
        kl = (p_t * (torch.log_softmax(t / T, dim=-1) - torch.log_softmax(s / T, dim=-1))).sum(-1).mean()
        want = T * T * float(kl)
        good = abs(got - want) <= 1e-3 * abs(want) + 1e-6  # fp32 KL of near-equal outputs: ~1e-7 noise
        ok &= good
        hint = ""
        if not good and want:
            ratio = got / want
            if abs(ratio * T * T - 1) < 1e-3:
                hint = " (T² missing)"
            elif abs(ratio * s.shape[-1] - 1) < 1e-3:
                hint = " (averaged over classes: 'mean' instead of 'batchmean')"
        shown.append(f"T={T:g}: {got:.6g} vs {want:.6g} by hand{hint}")
    return Check("kd = T²·KL", ok, "; ".join(shown))


def check_padding(loss_fn: HybridLoss, student, teacher, batch, pad_id: int, temperature: float, extra: int = 5) -> Check:
    """Appending padding changes no term by more than 1e-5 of it (every term masks padding,
    attention on rows and columns); the student runs in eval mode, so dropout cannot differ."""
    plain = {k: float(v) for k, v in loss_fn(student, teacher, batch, temperature).items()}
    padded = {k: float(v) for k, v in loss_fn(student, teacher, pad_batch(batch, pad_id, extra), temperature).items()}
    # fp32 noise from the longer rows is ~1e-10 here; a leak moves a term by far more than 1e-5 of it
    leaks = [f"{k} {plain[k]:.6g} -> {padded[k]:.6g}" for k in plain if abs(plain[k] - padded[k]) > 1e-5 * abs(plain[k]) + 1e-7]
    detail = (f"changed by {extra} extra pads: " + ", ".join(leaks)) if leaks else \
        f"{', '.join(f'{k} {v:.4g}' for k, v in plain.items())} unchanged with {extra} extra pads"
    return Check("padding masked", not leaks, detail)


def _map_errors(maps: dict[int, torch.Tensor], mask: torch.Tensor) -> tuple[float, float]:
    """Largest |row sum - 1| over real keys and largest value on a padded key."""
    keys = mask.bool()[:, None, None, :]  # [b, 1, 1, s]
    sum_err = max(float((m.double().masked_fill(~keys, 0).sum(-1) - 1).abs().max()) for m in maps.values())
    pad_max = max(float(m.double().masked_fill(keys, 0).abs().max()) for m in maps.values())
    return sum_err, pad_max


def check_maps(matcher, student: nn.Module, teacher: nn.Module, batch: dict[str, torch.Tensor]) -> Check:
    """Maps of the matched layers: distributions over real keys, 0 on pads, and the pre-dropout
    probabilities of the same forward even in train mode with dropout raised to 0.5."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    s_layers, t_layers = matcher.student_layers, matcher.teacher_layers
    problems = []
    with AttentionCapture(teacher, t_layers, keep="heads") as cap, torch.inference_mode():
        teacher.base_model(input_ids=ids, attention_mask=mask)  # the encoder only: no vocabulary logits
        t_sum, t_pad = _map_errors(cap.maps(), mask)
    raw: dict[int, dict[str, torch.Tensor]] = {}
    hooks = []
    for i in s_layers:  # independent hooks: the Q and K this very forward computed
        attn = encoder_layers(student)[i].attention.self
        for kind in ("query", "key"):
            hooks.append(getattr(attn, kind).register_forward_hook(
                lambda mod, args, out, i=i, kind=kind: raw.setdefault(i, {}).__setitem__(kind, out.detach())))
    dropouts = [m for m in student.modules() if isinstance(m, nn.Dropout)]
    old_p = [m.p for m in dropouts]
    try:
        for m in dropouts:
            m.p = 0.5
        with _mode(student, train=True), AttentionCapture(student, s_layers, keep="heads") as cap, torch.no_grad():
            student.base_model(input_ids=ids, attention_mask=mask)
            s_maps = cap.maps()
    finally:
        for m, p in zip(dropouts, old_p):
            m.p = p
        for h in hooks:
            h.remove()
    s_sum, s_pad = _map_errors(s_maps, mask)
    keys = mask.bool()[:, None, None, :]
    drift = 0.0
    for i, m in s_maps.items():
        attn = encoder_layers(student)[i].attention.self
        q, k = (split_heads(raw[i][x].double(), attn.num_attention_heads) for x in ("query", "key"))
        ref = (q @ k.transpose(-1, -2) * attn.scaling).masked_fill(~keys, -math.inf).softmax(-1)
        drift = max(drift, float((m.double() - ref).abs().max()))
    if max(t_sum, s_sum) > 1e-5:
        problems.append(f"rows do not sum to 1 over real keys (off by {max(t_sum, s_sum):.2g})")
    if max(t_pad, s_pad) > 0:
        problems.append(f"padded keys get weight {max(t_pad, s_pad):.2g}")
    if drift > 1e-5:
        problems.append(f"train-mode maps differ from softmax(QKᵀ) of the same forward by {drift:.2g}: dropout touched them")
    detail = "; ".join(problems) or (f"student layers {s_layers}, teacher layers {t_layers}: rows sum to 1, pads 0, "
                                      "dropout-free in train mode")
    return Check("attention maps", not problems, detail)


def check_gradients(loss_fn: HybridLoss, student: nn.Module, teacher: nn.Module | None, batch, temperature: float) -> Check:
    """Each weighted term, backpropagated alone (train mode), reaches the student and not the teacher."""
    norms = {}
    with _mode(student, train=True):
        for name in loss_fn.weights:
            student.zero_grad(set_to_none=True)
            loss_fn(student, teacher, batch, temperature)[name].backward()
            grads = [p.grad for p in student.parameters() if p.grad is not None]
            norms[name] = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    student.zero_grad(set_to_none=True)
    loss_fn.zero_grad(set_to_none=True)
    dead = [k for k, n in norms.items() if not (n > 0 and math.isfinite(n))]
    leaked = teacher is not None and any(p.grad is not None for p in teacher.parameters())
    problems = [f"{k} gives the student no (finite) gradient" for k in dead]
    if leaked:
        problems.append("the teacher received gradient")
    detail = "; ".join(problems) or ", ".join(f"{k} |grad| {n:.3g}" for k, n in norms.items())
    return Check("gradient per term", not problems, detail)


def check_invariants(student: nn.Module, teacher: nn.Module | None, tokenizer, stage_cfg: StageConfig,
                     batch: dict[str, torch.Tensor]) -> list[Check]:
    """The KD invariants on one real batch (from `collate`; MLM stages mask it here)."""
    device = next(student.parameters()).device
    batch = _prepare_batch(batch, tokenizer, stage_cfg, device)
    loss_fn = HybridLoss(stage_cfg, student, teacher).to(device)
    T = stage_cfg.temperature
    checks = [check_teacher_frozen(teacher)] if teacher is not None else []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # leave the caller's RNG alone
        with _mode(student, train=False), torch.no_grad():
            if "kd" in loss_fn.weights:
                checks.append(check_kd_temperature(loss_fn, student, teacher, batch, T))
            checks.append(check_padding(loss_fn, student, teacher, batch, tokenizer.pad_token_id, T))
        if loss_fn.matcher is not None:
            checks.append(check_maps(loss_fn.matcher, student, teacher, batch))
        checks.append(check_gradients(loss_fn, student, teacher, batch, T))
    return checks


# ----------------------------------------------------------------------------- overfit


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _weighted_loss(loss_fn: HybridLoss, student, teacher, batches, temperature: float) -> float:
    """Σ w·term over fixed batches, student in eval mode (no dropout: the same batches give the same value)."""
    with _mode(student, train=False), torch.no_grad():
        return sum(float(w * loss_fn(student, teacher, b, temperature)[k]) for b in batches for k, w in loss_fn.weights.items())


def overfit_check(student: nn.Module, teacher: nn.Module | None, tokenizer, stage_cfg: StageConfig, data: Encoded, *,
                  steps: int = 30, batch_size: int = 8, seed: int = 0, device: str | torch.device | None = None,
                  min_drop: float | None = None) -> list[Check]:
    """`steps` steps of the real loop (`train_stage`, lr at least 3e-3) on a copy of the student and
    2 batches: the weighted loss on those batches (fixed masks, eval mode, so no noise) must drop by
    `min_drop`, and the teacher must come out untouched (eval mode, frozen, no grads, same weights).

    Default `min_drop`: 30% for classification; 10% for masked LM, whose masks the loop redraws
    every step, so 30 steps get it to about the unigram entropy (-15 to -20% on tiny and demo sizes).
    """
    if min_drop is None:
        min_drop = 0.1 if stage_task(stage_cfg.kind) == "mlm" else 0.3
    device = torch.device(device) if device is not None else next(student.parameters()).device
    bs = min(stage_cfg.batch_size, batch_size)
    two = data.subset(range(min(len(data), 2 * bs)))
    cfg = replace(stage_cfg, name=f"{stage_cfg.name}[overfit]", batch_size=bs, grad_accum=1, epochs=float(steps),
                  max_steps=steps, warmup_ratio=0.0, eval_every=0, patience=0, lr=max(stage_cfg.lr, 3e-3))
    model = copy.deepcopy(student).to(device)
    loss_fn = HybridLoss(cfg, model, teacher).to(device)
    fixed = [_prepare_batch(collate(two, range(i, min(i + bs, len(two))), tokenizer.pad_token_id), tokenizer, cfg, device)
             for i in range(0, len(two), bs)]
    before_teacher = _snapshot(teacher) if teacher is not None else None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        first = _weighted_loss(loss_fn, model, teacher, fixed, cfg.temperature)
        train_stage(cfg, model, two, tokenizer=tokenizer, teacher=teacher, device=device, seed=seed, progress=False)
        last = _weighted_loss(loss_fn, model, teacher, fixed, cfg.temperature)
    ok = last <= (1 - min_drop) * first
    change = f"{100 * (last / first - 1):+.0f}%" if first else "n/a"
    checks = [Check("overfit 2 batches", ok, f"{steps} steps on 2 batches of {bs}: weighted loss {first:.4g} -> "
                    f"{last:.4g} ({change}; needs -{100 * min_drop:.0f}%)")]
    if teacher is not None:
        frozen = check_teacher_frozen(teacher)
        moved = [k for k, v in _snapshot(teacher).items() if not torch.equal(v, before_teacher[k])]
        detail = frozen.detail
        if moved:
            detail = f"training changed {len(moved)} teacher tensors, e.g. {moved[0]}; " + detail
        checks.append(Check("teacher untouched by the loop", frozen.ok and not moved, detail))
    return checks


# ----------------------------------------------------------------------------- pre-flight (seconds, no data)


def model_shape(name: str, trust_remote_code: bool = False):
    """The config (layers, sizes, vocab) of a preset or a saved model, without loading weights.

    A local folder must hold config.json and readable safetensors weights (their header is read,
    so a truncated file is caught here, not after the data and the teacher's training)."""
    from afrocomet.models.build import check_weights, looks_local
    from afrocomet.models.presets import get_preset

    if is_preset(name):
        return get_preset(name).to_config()
    if looks_local(name):
        check_weights(name)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise AfroCometError(f"could not read the config of model {name!r} (a folder with config.json, or a Hub id "
                             f"reachable now): {str(exc).strip().splitlines()[0]}") from exc


def preflight(config: RunConfig, where: str = "config") -> dict:
    """What can be checked before any data is read or any step is trained: the models' folders
    and weights, and every distillation stage's layer map and attention matching against the real
    layer counts and hidden sizes. Returns {"teacher": config, "student": config}."""
    from afrocomet.distill.matching import build_matcher
    from afrocomet.models.attention import validate_layer_map

    m = config.model
    shapes = {role: model_shape(name, m.trust_remote_code) for role, name in (("teacher", m.teacher),
                                                                                ("student", m.student))}
    s, t = shapes["student"], shapes["teacher"]
    sizes = (f"(student {m.student}: {s.num_hidden_layers} layers, hidden {s.hidden_size}; "
             f"teacher {m.teacher}: {t.num_hidden_layers} layers, hidden {t.hidden_size})")
    for stage in (st for st in config.stages if st.kind in DISTILL_KINDS):
        field = "layer_map"
        try:
            if stage.layer_map is not None:
                validate_layer_map(stage.layer_map, s.num_hidden_layers, t.num_hidden_layers)
            field = f"matching '{stage.matching}'"
            build_matcher(stage.matching, s, t, stage.layer_map, loss=stage.attention_loss,
                          relation_heads=stage.relation_heads)
        except AfroCometError as exc:
            raise AfroCometError(f"{where}: stage '{stage.name}' {field} {sizes}: {exc}") from None
    return shapes


def check_tokenizer_fits(config: RunConfig, tokenizer, shapes: dict) -> None:
    """A saved model's embedding must have a row for every token id the tokenizer can give."""
    for role in ("teacher", "student"):
        name = getattr(config.model, role)
        if not is_preset(name) and len(tokenizer) > shapes[role].vocab_size:
            raise AfroCometError(f"the tokenizer has {len(tokenizer)} tokens but the {role}'s embedding only "
                                 f"{shapes[role].vocab_size} (config.json vocab_size): this tokenizer does not "
                                 f"belong to this model", path=name)


# ----------------------------------------------------------------------------- a run config


def _train_texts(config: RunConfig, sample: int) -> tuple[list[str], list[int], tuple[str, ...]]:
    """A random sample of the training split: texts, label ids and label names."""
    from afrocomet.data.afrisenti import load_afrisenti, read_tsv
    from afrocomet.data.schema import LABELS

    d = config.data
    if d.train is not None:
        examples = read_tsv(d.train, labels=None)
    else:
        datasets = load_afrisenti(d.languages, d.data_dir, download=d.download, splits=("train",))
        examples = [ex for ds in datasets.values() for ex in ds.splits["train"]]
    found = {ex.label for ex in examples}
    names = LABELS if found == set(LABELS) else tuple(sorted(found))
    keep = np.random.default_rng(config.seed).permutation(len(examples))[:sample]
    chosen = [examples[i] for i in sorted(keep)]
    return [ex.text for ex in chosen], [names.index(ex.label) for ex in chosen], names


def _model_config(name: str, vocab_size: int, labels: tuple[str, ...], trust_remote_code: bool):
    """The full-size config a run would use: a preset's, or a saved model's config.json."""
    from afrocomet.models.presets import get_preset

    id2label = dict(enumerate(labels))
    if is_preset(name):
        return get_preset(name).to_config(vocab_size=vocab_size, num_labels=len(labels), id2label=id2label)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise AfroCometError(f"could not read the config of model {name!r} (a folder with config.json, or a Hub id "
                             f"reachable now): {str(exc).strip().splitlines()[0]}") from exc
    config.num_labels = len(labels)
    config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    return config


def _small_copy(config, layers: int, vocab_size: int | None):
    small = copy.deepcopy(config)
    small.num_hidden_layers = min(config.num_hidden_layers, layers)
    if vocab_size is not None:
        small.vocab_size = vocab_size
    return small


def _fits_layers(layer_map, student_layers: int, teacher_layers: int) -> bool:
    return layer_map is None or all(s < student_layers and t < teacher_layers for s, t in layer_map)


def run_doctor(config: RunConfig, *, device: str | None = None, sample: int = 2000, steps: int = 30,
               small_layers: tuple[int, int] = (2, 4)) -> list[Check]:
    """Memory estimates for every stage of `config` (AfroCometError if one cannot fit), then the
    invariants and the overfit test of every distillation stage on small random-weight copies of
    its models (at most `small_layers` = (student, teacher) layers; same widths, heads and vocab)
    and `sample` real training texts (the tokenizer of a preset teacher is trained on them)."""
    from afrocomet.models.build import build_model

    config = validate(config)
    shapes = preflight(config)
    dev = resolve_device(device or config.device)
    texts, labels, names = _train_texts(config, sample)
    tokenizer = tokenizer_for(config.model, texts)
    check_tokenizer_fits(config, tokenizer, shapes)
    m, seq_len = config.model, config.data.max_length
    full = {role: _model_config(name, m.vocab_size if is_preset(name) and is_preset(m.teacher) else len(tokenizer),
                                names, m.trust_remote_code)
            for role, name in (("teacher", m.teacher), ("student", m.student))}
    checks = []
    for stage in config.stages:
        trained = full["teacher"] if stage.kind in TEACHER_KINDS else full["student"]
        teacher = full["teacher"] if stage.kind in DISTILL_KINDS else None
        estimate = estimate_memory(trained, teacher, stage, seq_len, dev)
        if estimate["fits"] is False:
            raise memory_error(stage, estimate, estimate["total"])
        checks.append(Check("memory", True, f"about {_gib(estimate['total'])} of {_gib(estimate['available'])} free "
                            f"at batch {stage.batch_size} x {seq_len} tokens", stage.name))
    data = encode(tokenizer, texts, seq_len, labels=labels)
    for i, stage in enumerate(s for s in config.stages if s.kind in DISTILL_KINDS):
        task = stage_task(stage.kind)
        vocab = len(tokenizer) if is_preset(m.teacher) else None
        s_small = _small_copy(full["student"], small_layers[0], vocab)
        t_small = _small_copy(full["teacher"], small_layers[1], vocab)
        student = build_model(s_small, task, seed=config.seed + 2 * i).to(dev)
        teacher = build_model(t_small, task, seed=config.seed + 2 * i + 1).to(dev).eval().requires_grad_(False)
        if not _fits_layers(stage.layer_map, s_small.num_hidden_layers, t_small.num_hidden_layers):
            stage = replace(stage, layer_map=None)  # the small copies have fewer layers: uniform map
        batch = collate(data, range(min(stage.batch_size, 8)), tokenizer.pad_token_id)
        found = check_invariants(student, teacher, tokenizer, stage, batch)
        found += overfit_check(student, teacher, tokenizer, stage, data, steps=steps, seed=config.seed)
        checks += [replace(c, stage=stage.name) for c in found]
    return checks


def format_checks(checks: list[Check]) -> str:
    """A plain-text table: stage, check, ok/FAIL, detail."""
    rows = [("stage", "check", "result", "detail")] + [(c.stage, c.name, "ok" if c.ok else "FAIL", c.detail) for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows)
