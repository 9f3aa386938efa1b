"""Distillation losses: pure functions of tensors.

Every loss computes in fp32 (inputs may be bf16/fp16), masks padding, and returns a scalar that
keeps its autograd graph even when nothing is left after masking (the value is then 0).

Shapes: `b` batch, `s` sequence, `h` heads, `C` classes / vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from afrocomet.errors import InternalError


def _check_same_shape(name: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape != teacher.shape:
        raise InternalError(
            f"{name}: student shape {tuple(student.shape)} differs from teacher shape {tuple(teacher.shape)}"
        )


def _row_mean(values: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
    """Sum of per-row values divided by the number of kept rows; 0 (graph intact) if none."""
    return values.sum() / max(int(count), 1)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft-target distillation: T² · mean over kept rows of KL(softmax(t/T) || softmax(s/T)).

    logits: [..., C]; mask: bool [...] (logits.shape[:-1]), True = row kept; None keeps all rows.
    The KL is summed over classes and averaged over rows ("batchmean"), then multiplied by T².
    """
    _check_same_shape("kd_loss", student_logits, teacher_logits)
    if temperature <= 0:
        raise InternalError(f"kd_loss: temperature must be > 0, got {temperature}")
    num_classes = student_logits.shape[-1]
    if mask is None:
        student = student_logits.reshape(-1, num_classes)  # [n, C]
        teacher = teacher_logits.reshape(-1, num_classes)
    else:
        if mask.shape != student_logits.shape[:-1]:
            raise InternalError(
                f"kd_loss: mask shape {tuple(mask.shape)} must be {tuple(student_logits.shape[:-1])}"
            )
        mask = mask.bool()
        student, teacher = student_logits[mask], teacher_logits[mask]  # [n, C]
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="sum")
    return kl / max(student.shape[0], 1) * temperature**2


def combined_teacher_logits(
    teacher_logits: torch.Tensor,
    other_probs: torch.Tensor,
    weight: float | torch.Tensor,
    temperature: float,
    eps: float = 1e-8,
) -> torch.Tensor:
    """The combined teacher as logits for `kd_loss` at the same temperature:
    T · log(w · softmax(t/T) + (1 - w) · q), so that softmax(result / T) is exactly the mixture
    p = w · softmax(t/T) + (1 - w) · q (q: another model's class probabilities, e.g. the char n-gram
    model's). w = 1 gives back the transformer's softened distribution (the paper's target).

    teacher_logits, other_probs: [n, C]; weight w in [0, 1]: one for every row, or a tensor [n, 1] of one
    per row (e.g. each row's language's; only its shape is checked here, its range where the rows are
    given it, `run.ngram_teacher.with_soft_labels`: no device sync per step); probabilities floored at
    `eps` before the log.
    """
    _check_same_shape("combined_teacher_logits", teacher_logits, other_probs)
    if isinstance(weight, torch.Tensor):
        if weight.shape != (teacher_logits.shape[0], 1):
            raise InternalError(f"combined_teacher_logits: per-row weights must be [{teacher_logits.shape[0]}, 1], "
                                f"got {list(weight.shape)}")
        weight = weight.float()  # its range is checked once where the rows get it (no host read per step)
    elif not 0.0 <= weight <= 1.0:
        raise InternalError(f"combined_teacher_logits: weight must be in [0, 1], got {weight}")
    mixture = weight * F.softmax(teacher_logits.float() / temperature, dim=-1) + (1.0 - weight) * other_probs.float()
    return temperature * mixture.clamp_min(eps).log()


def hard_label_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """Cross-entropy with gold labels, averaged over kept rows.

    logits: [..., C]; labels: long [...]; a row is kept when its label != ignore_index and
    (if given) mask is True there. No kept rows -> 0 with the graph intact.
    """
    if labels.shape != logits.shape[:-1]:
        raise InternalError(
            f"hard_label_loss: labels shape {tuple(labels.shape)} must be {tuple(logits.shape[:-1])}"
        )
    keep = labels != ignore_index
    if mask is not None:
        keep = keep & mask.bool()
    logits, labels = logits[keep].float(), labels[keep]  # [n, C], [n]
    loss = F.cross_entropy(logits, labels, reduction="sum")
    return loss / max(labels.numel(), 1)


def _pair_mask(mask: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Query-and-key mask broadcastable to `maps`, and the number of kept (real query) rows.

    mask: [b, s] (1 real, 0 pad); maps: [b, s, s] or [b, h, s, s].
    """
    if maps.dim() not in (3, 4) or maps.shape[-1] != maps.shape[-2]:
        raise InternalError(f"attention maps must be [b, s, s] or [b, h, s, s], got {tuple(maps.shape)}")
    if mask.shape != (maps.shape[0], maps.shape[-1]):
        raise InternalError(
            f"padding mask shape {tuple(mask.shape)} must be {(maps.shape[0], maps.shape[-1])}"
        )
    real = mask.bool()
    pairs = real[:, :, None] & real[:, None, :]  # [b, s_query, s_key]
    heads = 1
    if maps.dim() == 4:
        pairs = pairs[:, None]  # [b, 1, s, s]
        heads = maps.shape[1]
    return pairs, int(real.sum()) * heads


def attention_mse(student_map: torch.Tensor, teacher_map: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error between attention maps, masked on rows and columns.

    maps: probabilities [b, s, s] or [b, h, s, s]; mask: [b, s] (1 real, 0 pad).
    Loss = (sum over real query rows (and heads) of sum over real keys of (s - t)²) / (#real rows · h).
    """
    _check_same_shape("attention_mse", student_map, teacher_map)
    pairs, rows = _pair_mask(mask, student_map)
    error = (student_map.float() - teacher_map.float()).pow(2)
    return _row_mean(error.masked_fill(~pairs, 0.0), rows)


def attention_kl(
    student_map: torch.Tensor, teacher_map: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """KL(teacher row || student row) between attention maps, masked on rows and columns.

    maps are probabilities already (not re-softmaxed) [b, s, s] or [b, h, s, s]; mask: [b, s].
    Per row: sum over real keys of t · (log max(t, eps) - log max(s, eps)); averaged over real
    query rows (and heads).
    """
    _check_same_shape("attention_kl", student_map, teacher_map)
    pairs, rows = _pair_mask(mask, student_map)
    student, teacher = student_map.float(), teacher_map.float()
    if teacher.is_inference() and not torch.is_inference_mode_enabled():
        teacher = teacher.clone()  # an inference tensor cannot be saved for backward
    kl = teacher * (teacher.clamp_min(eps).log() - student.clamp_min(eps).log())
    return _row_mean(kl.masked_fill(~pairs, 0.0), rows)


def relation_loss(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """MiniLMv2 relation loss: KL(teacher relation || student relation), masked on rows and columns.

    scores are relation *logits* (scaled dot products X_r X_rᵀ / sqrt(d_r)), [b, s, s] or
    [b, r, s, s]; the relation distribution is their softmax over real keys, taken here with a
    masked log_softmax (stable, no eps needed). Averaged over real query rows (and relation heads).
    """
    _check_same_shape("relation_loss", student_scores, teacher_scores)
    pairs, rows = _pair_mask(mask, student_scores)
    keys = mask.bool()[:, None, :] if student_scores.dim() == 3 else mask.bool()[:, None, None, :]
    fill = torch.finfo(torch.float32).min

    def masked_log_softmax(scores: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(scores.float().masked_fill(~keys, fill), dim=-1)
        return log_p.masked_fill(~pairs, 0.0)  # padded entries contribute exactly 0 below

    log_student = masked_log_softmax(student_scores)
    log_teacher = masked_log_softmax(teacher_scores)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="none")  # exp(t)·(t - s)
    return _row_mean(kl.masked_fill(~pairs, 0.0), rows)
