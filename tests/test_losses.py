"""Distillation losses against hand computations on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from afrocomet.distill.losses import attention_kl, attention_mse, hard_label_loss, kd_loss, relation_loss
from afrocomet.errors import AfroCometError, InternalError


def softmax(xs: list[float]) -> list[float]:
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


# -- kd_loss -------------------------------------------------------------------------------------


STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]


def hand_kd(rows: list[int], t: float) -> float:
    per_row = [kl(softmax([x / t for x in TEACHER[r]]), softmax([x / t for x in STUDENT[r]])) for r in rows]
    return sum(per_row) / len(per_row) * t * t


def test_kd_loss_matches_hand_computation_with_t_squared():
    s, t = torch.tensor(STUDENT), torch.tensor(TEACHER)
    assert kd_loss(s, t, temperature=2.0).item() == pytest.approx(hand_kd([0, 1], 2.0), rel=1e-5)
    assert kd_loss(s, t, temperature=1.0).item() == pytest.approx(hand_kd([0, 1], 1.0), rel=1e-5)


def test_kd_loss_mask_keeps_rows_and_handles_3d():
    s, t = torch.tensor([STUDENT]), torch.tensor([TEACHER])  # [1, 2, 3]
    mask = torch.tensor([[False, True]])
    assert kd_loss(s, t, 3.0, mask).item() == pytest.approx(hand_kd([1], 3.0), rel=1e-5)


def test_kd_loss_empty_mask_is_zero_with_graph():
    s = torch.tensor(STUDENT, requires_grad=True)
    loss = kd_loss(s, torch.tensor(TEACHER), 2.0, torch.zeros(2, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_kd_loss_bf16_inputs_compute_in_fp32_and_stay_stable():
    s = torch.tensor(STUDENT, dtype=torch.bfloat16)
    t = torch.tensor(TEACHER, dtype=torch.bfloat16)
    loss = kd_loss(s, t, 2.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(hand_kd([0, 1], 2.0), rel=1e-2)
    huge = kd_loss(torch.tensor([[1000.0, 0.0]]), torch.tensor([[0.0, 1000.0]]), 1.0)
    assert torch.isfinite(huge) and huge.item() == pytest.approx(1000.0, rel=1e-4)


def test_kd_loss_teacher_from_inference_mode_and_validation():
    with torch.inference_mode():
        t = torch.tensor(TEACHER) * 1.0
    s = torch.tensor(STUDENT, requires_grad=True)
    kd_loss(s, t, 2.0).backward()
    assert s.grad is not None
    with pytest.raises(InternalError, match="temperature"):
        kd_loss(s, t, 0.0)
    with pytest.raises(InternalError, match="shape"):
        kd_loss(s, t[:, :2], 1.0)


# -- hard_label_loss -----------------------------------------------------------------------------


def test_hard_label_loss_matches_hand_and_ignores():
    logits = torch.tensor(STUDENT)
    labels = torch.tensor([1, 2])
    hand = [-math.log(softmax(STUDENT[0])[1]), -math.log(softmax(STUDENT[1])[2])]
    assert hard_label_loss(logits, labels).item() == pytest.approx(sum(hand) / 2, rel=1e-5)
    assert hard_label_loss(logits, torch.tensor([-100, 2])).item() == pytest.approx(hand[1], rel=1e-5)
    masked = hard_label_loss(logits, labels, mask=torch.tensor([True, False]))
    assert masked.item() == pytest.approx(hand[0], rel=1e-5)
    x = logits.clone().requires_grad_()
    empty = hard_label_loss(x, torch.tensor([-100, -100]))
    empty.backward()
    assert empty.item() == 0.0 and x.grad is not None


# -- attention maps ------------------------------------------------------------------------------


# one sequence of 3 tokens, the last one padding; rows are query tokens
S_MAP = torch.tensor([[[0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0.5, 0.5, 0.0]]])
T_MAP = torch.tensor([[[0.5, 0.5, 0.0], [0.4, 0.6, 0.0], [0.1, 0.9, 0.0]]])
PAD_MASK = torch.tensor([[1, 1, 0]])


def test_attention_mse_hand():
    # rows 0 and 1 are real: (0.1² + 0.1²) + (0.2² + 0.2²) = 0.1, over 2 rows
    assert attention_mse(S_MAP, T_MAP, PAD_MASK).item() == pytest.approx(0.05, rel=1e-5)
    # garbage in padded rows/columns changes nothing
    noisy = S_MAP.clone()
    noisy[0, 2, :] = 7.0
    noisy[0, :, 2] = -3.0
    assert attention_mse(noisy, T_MAP, PAD_MASK).item() == pytest.approx(0.05, rel=1e-5)


def test_attention_kl_hand_and_no_second_softmax():
    hand = (kl([0.5, 0.5], [0.6, 0.4]) + kl([0.4, 0.6], [0.2, 0.8])) / 2
    assert attention_kl(S_MAP, T_MAP, PAD_MASK).item() == pytest.approx(hand, rel=1e-5)
    assert attention_kl(T_MAP, T_MAP, PAD_MASK).item() == 0.0
    # a re-softmaxed version would give a different number
    resoftmaxed = (kl(softmax([0.5, 0.5]), softmax([0.6, 0.4])) + kl(softmax([0.4, 0.6]), softmax([0.2, 0.8]))) / 2
    assert abs(resoftmaxed - hand) > 1e-3


def test_attention_kl_eps_clamps_zero_student_probability():
    student = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]], requires_grad=True)
    teacher = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]])
    loss = attention_kl(student, teacher, torch.ones(1, 2), eps=1e-6)
    hand = (0.5 * math.log(0.5 / 1.0) + 0.5 * math.log(0.5 / 1e-6)) / 2
    assert loss.item() == pytest.approx(hand, rel=1e-5)
    loss.backward()
    assert torch.isfinite(student.grad).all()


def test_attention_losses_with_heads_dim_average_over_heads():
    s = torch.stack([S_MAP[0], T_MAP[0]])[None]  # [1, 2, 3, 3]: head 1 equals the teacher
    t = torch.stack([T_MAP[0], T_MAP[0]])[None]
    assert attention_mse(s, t, PAD_MASK).item() == pytest.approx(0.025, rel=1e-5)
    single = attention_kl(S_MAP, T_MAP, PAD_MASK).item()
    assert attention_kl(s, t, PAD_MASK).item() == pytest.approx(single / 2, rel=1e-5)


def test_attention_loss_empty_mask_and_shape_errors():
    s = S_MAP.clone().requires_grad_()
    loss = attention_kl(s, T_MAP, torch.zeros(1, 3))
    loss.backward()
    assert loss.item() == 0.0 and s.grad is not None
    with pytest.raises(InternalError, match="padding mask"):
        attention_mse(S_MAP, T_MAP, torch.ones(1, 4))
    with pytest.raises(InternalError, match="differs"):
        attention_kl(S_MAP, T_MAP[:, :2, :2], PAD_MASK)


def test_attention_kl_accepts_inference_mode_teacher():
    with torch.inference_mode():
        teacher = T_MAP * 1.0
    s = S_MAP.clone().requires_grad_()
    attention_kl(s, teacher, PAD_MASK).backward()
    assert s.grad is not None


# -- relation_loss -------------------------------------------------------------------------------


def test_relation_loss_hand_and_padding_invariance():
    s_scores = torch.tensor([[[1.0, 0.0, 5.0], [0.5, 2.0, -4.0], [9.0, 9.0, 9.0]]])
    t_scores = torch.tensor([[[0.0, 1.0, -5.0], [1.0, 1.0, 8.0], [3.0, 1.0, 2.0]]])
    hand = (kl(softmax([0.0, 1.0]), softmax([1.0, 0.0])) + kl(softmax([1.0, 1.0]), softmax([0.5, 2.0]))) / 2
    assert relation_loss(s_scores, t_scores, PAD_MASK).item() == pytest.approx(hand, rel=1e-5)
    # padded key scores are ignored
    other = s_scores.clone()
    other[..., 2] = -100.0
    assert relation_loss(other, t_scores, PAD_MASK).item() == pytest.approx(hand, rel=1e-5)
    # relation-head dim: two identical heads give the same mean
    both = relation_loss(s_scores[:, None].repeat(1, 2, 1, 1), t_scores[:, None].repeat(1, 2, 1, 1), PAD_MASK)
    assert both.item() == pytest.approx(hand, rel=1e-5)


def test_relation_loss_fully_padded_sequence_has_finite_zero_grad():
    s = torch.randn(2, 3, 3, requires_grad=True)
    t = torch.randn(2, 3, 3)
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    loss = relation_loss(s, t, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert torch.equal(s.grad[1], torch.zeros(3, 3))


def test_magnitude_balancer_keeps_its_running_sizes_on_the_device():
    """Each term divided by the EMA of its own size; the EMA is a detached tensor (no host read a
    micro-step), its floats only on request (a checkpoint), and it goes on from those floats."""
    from afrocomet.distill.balancing import LossBalancer

    balancer, reference = LossBalancer({"hard": 1.0, "kd": 0.5}, "magnitude", momentum=0.9), {}
    steps = [{"hard": 2.0, "kd": 40.0}, {"hard": 1.0, "kd": 20.0}, {"hard": 0.5, "kd": 30.0}]
    for values in steps:
        losses = {k: torch.tensor(v, requires_grad=True) for k, v in values.items()}
        total = balancer(losses)
        want = 0.0
        for k, w in (("hard", 1.0), ("kd", 0.5)):
            reference[k] = 0.9 * reference.get(k, values[k]) + 0.1 * values[k]
            want += w * values[k] / reference[k]
        assert float(total.detach()) == pytest.approx(want, rel=1e-6)
        assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in balancer.running.values())
    assert balancer.running_sizes() == pytest.approx(reference, rel=1e-6)
    resumed = LossBalancer({"hard": 1.0, "kd": 0.5}, "magnitude", momentum=0.9)
    resumed.running = balancer.running_sizes()
    nxt = {"hard": torch.tensor(1.5), "kd": torch.tensor(10.0)}
    assert float(resumed(nxt)) == pytest.approx(float(balancer(nxt)), rel=1e-6)
