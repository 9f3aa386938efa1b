"""The KD invariants, checked on one real batch (`check_invariants`; `afrocomet doctor` and the
pre-flight of every distillation stage run them):

- the teacher is frozen and in eval mode;
- the KD term equals T² · KL computed by hand;
- padding appended to the batch changes no term;
- captured maps sum to 1 over real keys, are 0 on padded keys and are the pre-dropout probabilities;
- every weighted term sends gradient to the student and none to the teacher.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from afrocomet.config import StageConfig
from afrocomet.data.batching import Encoded, MLMMasker, collate
from afrocomet.distill.objective import HybridLoss, model_outputs
from afrocomet.errors import AfroCometError
from afrocomet.models.attention import AttentionCapture, encoder_layers, split_heads


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    stage: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def model_mode(model: nn.Module, train: bool):
    """`model` in train or eval mode inside the block, back as it was after."""
    was = model.training
    model.train(train)
    try:
        yield
    finally:
        model.train(was)


def prepare_batch(batch: dict[str, torch.Tensor], tokenizer, cfg: StageConfig, device) -> dict[str, torch.Tensor]:
    """The batch as the loop sees it: masked for MLM stages (at least one masked token), on `device`."""
    batch = dict(batch)
    if cfg.task == "mlm" and "mlm_labels" not in batch:
        batch = MLMMasker(tokenizer, cfg.mlm_probability, seed=0)(batch)
        if not (batch["mlm_labels"] != -100).any():  # a tiny batch can draw no mask at all
            batch["mlm_labels"][:, 1] = batch["input_ids"][:, 1]
            batch["input_ids"][:, 1] = tokenizer.mask_token_id
    elif cfg.task == "classification" and "labels" not in batch:
        raise AfroCometError(f"stage '{cfg.name}': the doctor's batch has no labels")
    return {k: v.to(device) for k, v in batch.items()}


def pad_batch(batch: dict[str, torch.Tensor], pad_id: int, extra: int = 5) -> dict[str, torch.Tensor]:
    """The same batch with `extra` padding columns appended to every row of its [b, s] tensors (per-text
    ones such as `teacher_probs` [b, C] stay as they are)."""
    fill = {"input_ids": pad_id, "attention_mask": 0, "mlm_labels": -100}
    out = {}
    for key, value in batch.items():
        if key in fill and value.dim() == 2:
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
    """The trainer's KD term equals T² · mean over rows of KL(p_t || softmax(s/T)) by hand, p_t = softmax(t/T)
    or (stage teacher_mix w) the combined teacher's w · softmax(t/T) + (1 - w) · teacher_probs."""
    s = model_outputs(student, batch, loss_fn.task)["logits"].double()  # [rows, C]
    with torch.inference_mode():
        t = model_outputs(teacher, batch, loss_fn.task)["logits"].double().clone()
    shown, ok = [], True
    for T in sorted({float(temperature), 4.0}):
        got = float(loss_fn.terms(student, teacher, batch, T)["kd"])
        p_t = torch.softmax(t / T, dim=-1)
        w = loss_fn.cfg.teacher_mix
        if w is not None and loss_fn.task == "classification":  # the combined teacher's mixture
            w = batch["teacher_weight"].double() if "teacher_weight" in batch else w  # per row: its language's
            p_t = w * p_t + (1 - w) * batch["teacher_probs"].double()
        kl = (p_t * (p_t.clamp_min(1e-8).log() - torch.log_softmax(s / T, dim=-1))).sum(-1).mean()
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
    plain = {k: float(v) for k, v in loss_fn.terms(student, teacher, batch, temperature).items()}
    padded = {k: float(v) for k, v in loss_fn.terms(student, teacher, pad_batch(batch, pad_id, extra), temperature).items()}
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
        with model_mode(student, train=True), AttentionCapture(student, s_layers, keep="heads") as cap, torch.no_grad():
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
    with model_mode(student, train=True):
        for name in loss_fn.weights:
            student.zero_grad(set_to_none=True)
            loss_fn.terms(student, teacher, batch, temperature)[name].backward()
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
    batch = prepare_batch(batch, tokenizer, stage_cfg, device)
    loss_fn = HybridLoss(stage_cfg, student, teacher).to(device)
    T = stage_cfg.temperature
    checks = [check_teacher_frozen(teacher)] if teacher is not None else []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # leave the caller's RNG alone
        with model_mode(student, train=False), torch.no_grad():
            if "kd" in loss_fn.weights:
                checks.append(check_kd_temperature(loss_fn, student, teacher, batch, T))
            checks.append(check_padding(loss_fn, student, teacher, batch, tokenizer.pad_token_id, T))
        if loss_fn.matcher is not None:
            checks.append(check_maps(loss_fn.matcher, student, teacher, batch))
        checks.append(check_gradients(loss_fn, student, teacher, batch, T))
    return checks


PREFLIGHT_EXAMPLES = 4  # the invariants run on this many training examples before each distillation


def preflight_invariants(cfg: StageConfig, student: nn.Module, teacher: nn.Module, train: Encoded, tokenizer) -> None:
    """The KD invariants on a few real examples of `train` before the first step
    (RNG and weights untouched); AfroCometError naming every failed check."""
    batch = collate(train, list(range(min(PREFLIGHT_EXAMPLES, len(train)))), tokenizer.pad_token_id)
    failed = [c for c in check_invariants(student, teacher, tokenizer, cfg, batch) if not c.ok]
    if failed:
        raise AfroCometError(f"stage '{cfg.name}': pre-flight invariant check failed: "
                             + "; ".join(f"{c.name}: {c.detail}" for c in failed))
