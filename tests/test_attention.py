"""Attention capture (models/attention.py) and the three matching modes (distill/matching.py)."""

from __future__ import annotations

import pytest
import torch
from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaForSequenceClassification, XLMRobertaModel

from afrocomet.distill.losses import attention_kl
from afrocomet.distill.matching import (
    MeanMatcher,
    ProjectionMatcher,
    RelationMatcher,
    build_matcher,
    default_relation_heads,
)
from afrocomet.errors import AfroCometError, InternalError
from afrocomet.models.attention import AttentionCapture, uniform_layer_map, validate_layer_map

PAD = 1
VOCAB = 64


def config(**overrides) -> XLMRobertaConfig:
    values = dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, pad_token_id=PAD, bos_token_id=0, eos_token_id=2,
    )
    values.update(overrides)
    return XLMRobertaConfig(**values)


def batch(seed: int = 0, pad_last: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences of 9 tokens; the second one ends with `pad_last` pads."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    if pad_last:
        ids[1, -pad_last:], mask[1, -pad_last:] = PAD, 0
    return ids, mask


def pad_more(ids: torch.Tensor, mask: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.cat([ids, torch.full((ids.shape[0], extra), PAD)], 1),
            torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=mask.dtype)], 1))


def twin_models(**overrides):
    """The same weights as an SDPA model and an eager model (separate config objects)."""
    torch.manual_seed(0)
    sdpa = XLMRobertaForMaskedLM(config(initializer_range=0.3, **overrides)).eval()
    eager = XLMRobertaForMaskedLM(config(initializer_range=0.3, attn_implementation="eager", **overrides)).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    return sdpa, eager


# -- layer maps ----------------------------------------------------------------------------------


def test_uniform_layer_map():
    assert uniform_layer_map(4, 12) == [(0, 2), (1, 5), (2, 8), (3, 11)]
    assert uniform_layer_map(2, 2) == [(0, 0), (1, 1)]
    assert uniform_layer_map(3, 4) == [(0, 0), (1, 2), (2, 3)]
    assert uniform_layer_map(4, 6) == [(0, 1), (1, 2), (2, 4), (3, 5)]  # halves round up
    assert uniform_layer_map(4, 2) == [(0, 0), (1, 0), (2, 1), (3, 1)]


def test_validate_layer_map_errors_name_layer_and_range():
    assert validate_layer_map([[0, 3], [1, 5]], 2, 6) == [(0, 3), (1, 5)]
    with pytest.raises(AfroCometError, match=r"student layer 4 .*0\.\.3"):
        validate_layer_map([(4, 0)], 4, 12)
    with pytest.raises(AfroCometError, match=r"teacher layer 12 .*0\.\.11"):
        validate_layer_map([(0, 12)], 4, 12)
    with pytest.raises(AfroCometError, match="teacher layer -1"):
        validate_layer_map([(0, -1)], 4, 12)
    with pytest.raises(AfroCometError, match="two integers"):
        validate_layer_map([(0, 1.5)], 4, 12)
    with pytest.raises(AfroCometError, match="empty"):
        validate_layer_map([], 4, 12)


# -- capture -------------------------------------------------------------------------------------


def test_capture_equals_eager_attentions_with_sdpa_and_padding():
    sdpa, eager = twin_models(num_hidden_layers=3)
    ids, mask = batch()
    with AttentionCapture(sdpa, [0, 2], keep="heads") as heads, AttentionCapture(sdpa, [2], keep="qkv") as raw:
        out = sdpa(ids, attention_mask=mask)
        maps, from_qkv = heads.maps(), raw.maps()
        pooled = heads.pooled()
    assert out.attentions is None  # nothing asked of the model itself
    reference = eager(ids, attention_mask=mask, output_attentions=True).attentions
    assert sorted(maps) == [0, 2]
    for layer in (0, 2):
        assert maps[layer].shape == (2, 4, 9, 9)
        torch.testing.assert_close(maps[layer], reference[layer], atol=1e-5, rtol=0)
        torch.testing.assert_close(pooled[layer], reference[layer].mean(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(from_qkv[2], reference[2], atol=1e-5, rtol=0)
    # the reference itself is not trivial (not uniform attention)
    assert reference[2][0].max() > 0.3


def test_maps_are_distributions_over_real_keys():
    sdpa, _ = twin_models()
    ids, mask = batch(pad_last=4)
    with AttentionCapture(sdpa, [1], keep="pooled") as cap:
        sdpa(ids, attention_mask=mask)
        pooled = cap.pooled()[1]  # [2, 9, 9]
    assert pooled.dtype == torch.float32
    assert torch.all(pooled[1, :, -4:] == 0)
    torch.testing.assert_close(pooled.sum(-1), torch.ones(2, 9))
    assert cap.mask is None  # cleared on detach


def test_capture_without_mask_and_hooks_removed():
    torch.manual_seed(0)
    model = XLMRobertaModel(config()).eval()
    ids, _ = batch(pad_last=0)
    cap = AttentionCapture(model, [1]).attach()
    model(ids)
    assert cap.mask.all() and sorted(cap.pooled()) == [1]
    cap.detach()
    hooks = [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooks == []


def test_gradients_flow_to_student_and_not_to_inference_mode_teacher():
    torch.manual_seed(0)
    student = XLMRobertaForSequenceClassification(config(num_labels=3)).train()
    teacher = XLMRobertaForMaskedLM(config(num_hidden_layers=4, initializer_range=0.3)).eval()
    ids, mask = batch()
    s_cap, t_cap = AttentionCapture(student, [1]), AttentionCapture(teacher, [3])
    with s_cap, t_cap:
        with torch.inference_mode():
            teacher(ids, attention_mask=mask)
        student(ids, attention_mask=mask)
        t_map = t_cap.pooled()[3]
        assert not t_map.requires_grad
        loss = attention_kl(s_cap.pooled()[1], t_map, mask)
        loss.backward()
    layers = student.roberta.encoder.layer
    assert layers[1].attention.self.query.weight.grad.abs().sum() > 0
    assert layers[0].attention.self.value.weight.grad.abs().sum() > 0  # through layer 0's output
    assert layers[1].attention.self.value.weight.grad is None  # V of the matched layer plays no part
    assert all(p.grad is None for p in teacher.parameters())


def test_train_mode_maps_are_dropout_free():
    sdpa, eager = twin_models(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5)
    ids, mask = batch()
    with AttentionCapture(sdpa, [0], keep="heads") as cap:
        sdpa(ids, attention_mask=mask)
        eval_maps = cap.maps()[0]
        sdpa.train()
        torch.manual_seed(1)
        sdpa(ids, attention_mask=mask)
        train_maps = cap.maps()[0]
    torch.testing.assert_close(train_maps, eval_maps, atol=1e-6, rtol=0)
    # the model's own maps in train mode do carry dropout: the test can tell the difference
    eager.train()
    torch.manual_seed(1)
    dropped = eager(ids, attention_mask=mask, output_attentions=True).attentions[0]
    assert (dropped - eval_maps).abs().max() > 0.1


def test_bf16_model_gives_fp32_maps_close_to_fp32():
    sdpa, _ = twin_models()
    ids, mask = batch()
    with AttentionCapture(sdpa, [1]) as cap:
        sdpa(ids, attention_mask=mask)
        full = cap.pooled()[1]
        sdpa.to(torch.bfloat16)
        sdpa(ids, attention_mask=mask)
        half = cap.pooled()[1]
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, atol=3e-2, rtol=0)


def test_capture_errors():
    model = XLMRobertaModel(config())
    with pytest.raises(AfroCometError, match=r"layer 2 is out of range .*0\.\.1"):
        AttentionCapture(model, [2])
    with pytest.raises(AfroCometError, match="capture mode"):
        AttentionCapture(model, [0], keep="all")
    with pytest.raises(AfroCometError, match="encoder layers"):
        AttentionCapture(torch.nn.Linear(2, 2), [0])
    cap = AttentionCapture(model, [0]).attach()
    with pytest.raises(AfroCometError, match="run the model forward"):
        cap.pooled()
    model(batch()[0])
    with pytest.raises(AfroCometError, match='keep="heads"'):
        cap.maps()
    with pytest.raises(AfroCometError, match='keep="qkv"'):
        cap.qkv()
    cap.detach()


# -- matching ------------------------------------------------------------------------------------


def student_teacher(seed: int = 0):
    torch.manual_seed(seed)
    student = XLMRobertaForMaskedLM(config(num_hidden_layers=2, hidden_size=32, num_attention_heads=4))
    teacher = XLMRobertaForMaskedLM(
        config(num_hidden_layers=4, hidden_size=48, num_attention_heads=6, intermediate_size=96, initializer_range=0.3)
    ).eval()
    return student.eval(), teacher


def matching_loss(matcher, student, teacher, ids, mask):
    s_cap, t_cap = matcher.captures(student, teacher)
    with s_cap, t_cap:
        with torch.inference_mode():
            teacher(ids, attention_mask=mask)
        student(ids, attention_mask=mask)
        return matcher(s_cap, t_cap, mask)


@pytest.mark.parametrize("mode", ["mean", "projection", "relations"])
def test_each_mode_is_finite_and_decreases_when_training(mode):
    student, teacher = student_teacher()
    matcher = build_matcher(mode, student.config, teacher.config)
    ids, mask = batch()
    optimizer = torch.optim.Adam(list(student.parameters()) + list(matcher.parameters()), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = matching_loss(matcher, student, teacher, ids, mask)
        assert loss.dim() == 0 and torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # a 4-head student cannot mix its way to 6 peaked teacher heads quickly: a smaller drop there
    assert losses[-1] < {"mean": 0.5, "projection": 0.85, "relations": 0.5}[mode] * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


@pytest.mark.parametrize("mode", ["mean", "projection", "relations"])
def test_padding_does_not_change_the_loss(mode):
    student, teacher = student_teacher()
    matcher = build_matcher(mode, student.config, teacher.config)
    if mode == "projection":
        torch.nn.init.normal_(matcher.mixing)
    ids, mask = batch()
    short = matching_loss(matcher, student, teacher, ids, mask)
    longer = matching_loss(matcher, student, teacher, *pad_more(ids, mask, 5))
    assert short.item() > 1e-3
    assert abs(short.item() - longer.item()) < 1e-5


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_mean_mode_is_zero_for_identical_models(loss):
    _, teacher = student_teacher()
    twin = XLMRobertaForMaskedLM(teacher.config).eval()
    twin.load_state_dict(teacher.state_dict())
    matcher = build_matcher("mean", twin.config, teacher.config, loss=loss)
    assert isinstance(matcher, MeanMatcher) and matcher.layer_map == [(i, i) for i in range(4)]
    assert list(matcher.parameters()) == []
    ids, mask = batch()
    assert matching_loss(matcher, twin, teacher, ids, mask).item() < 1e-7
    other = XLMRobertaForMaskedLM(config(num_hidden_layers=4, hidden_size=48, num_attention_heads=6,
                                         intermediate_size=96, initializer_range=0.3)).eval()
    assert matching_loss(matcher, other, teacher, ids, mask).item() > 1e-3


def test_projection_parameters_and_distributions():
    student, teacher = student_teacher()
    matcher = build_matcher("projection", student.config, teacher.config, layer_map=[(0, 1), (1, 3)])
    assert isinstance(matcher, ProjectionMatcher)
    assert sum(p.numel() for p in matcher.parameters()) == 2 * 4 * 6
    assert matcher.mixing.shape == (2, 6, 4)
    # zero-initialised mixing = every teacher head is compared with the student's head mean
    ids, mask = batch()
    mean = build_matcher("mean", student.config, teacher.config, layer_map=[(0, 1), (1, 3)], loss="mse")
    proj_mse = build_matcher("projection", student.config, teacher.config, layer_map=[(0, 1), (1, 3)], loss="mse")
    assert matching_loss(proj_mse, student, teacher, ids, mask).item() >= matching_loss(
        mean, student, teacher, ids, mask
    ).item() - 1e-7  # per-head error >= error of head means (Jensen)


def test_relations_heads_and_validation():
    student, teacher = student_teacher()
    matcher = build_matcher("relations", student.config, teacher.config)
    assert isinstance(matcher, RelationMatcher) and matcher.relation_heads == 4  # 32 and 48 both divide by 4
    assert build_matcher("relations", student.config, teacher.config, relation_heads=8).relation_heads == 8
    with pytest.raises(AfroCometError, match="relation heads must divide"):
        build_matcher("relations", student.config, teacher.config, relation_heads=6)
    assert default_relation_heads(48, 96, 12, 6) == 12
    assert default_relation_heads(40, 48, 6, 5) == 4  # gcd 8, at most 6 heads
    # identical models: zero relation loss
    twin = XLMRobertaForMaskedLM(teacher.config).eval()
    twin.load_state_dict(teacher.state_dict())
    same = build_matcher("relations", twin.config, teacher.config)
    assert matching_loss(same, twin, teacher, *batch()).item() < 1e-6


def test_build_matcher_errors():
    student, teacher = student_teacher()
    with pytest.raises(AfroCometError, match="unknown attention matching mode 'avg'"):
        build_matcher("avg", student.config, teacher.config)
    with pytest.raises(AfroCometError, match="unknown attention loss 'l1'"):
        build_matcher("mean", student.config, teacher.config, loss="l1")
    with pytest.raises(AfroCometError, match="teacher layer 4"):
        build_matcher("mean", student.config, teacher.config, layer_map=[(0, 4)])
    matcher = build_matcher("mean", student.config, teacher.config)
    s_cap, t_cap = matcher.captures(student, teacher)
    with s_cap, t_cap:
        ids, mask = batch()
        with pytest.raises(InternalError, match="run the teacher and the student"):
            matcher(s_cap, t_cap)
        teacher(*pad_more(ids, mask, 2))
        student(ids, attention_mask=mask)
        with pytest.raises(InternalError, match="same tokens"):
            matcher(s_cap, t_cap)


def test_gradient_checkpointing_gives_the_same_gradients():
    student, teacher = student_teacher()
    plain = XLMRobertaForMaskedLM(config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    plain.load_state_dict(student.state_dict())
    checkpointed = XLMRobertaForMaskedLM(config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    checkpointed.load_state_dict(student.state_dict())
    checkpointed.activation_checkpointing_enable()  # transformers 5: non-reentrant by default
    matcher = build_matcher("relations", plain.config, teacher.config)
    ids, mask = batch()
    for model in (plain, checkpointed):
        model.train()
        s_cap, t_cap = matcher.captures(model, teacher)
        with s_cap, t_cap:  # attached through backward: recomputation runs the hooks again
            with torch.inference_mode():
                teacher(ids, attention_mask=mask)
            model(ids, attention_mask=mask)
            matcher(s_cap, t_cap, mask).backward()
    grad = [m.roberta.encoder.layer[0].attention.self.query.weight.grad for m in (plain, checkpointed)]
    assert grad[0].abs().max() > 0
    torch.testing.assert_close(grad[1], grad[0])
    # reentrant checkpointing runs the forward without grad: said loudly, not trained silently
    reentrant = XLMRobertaForMaskedLM(config())
    reentrant.activation_checkpointing_enable({"use_reentrant": True})
    with pytest.raises(AfroCometError, match="use_reentrant"):
        matching_loss(matcher, reentrant.train(), teacher, ids, mask)


def test_maps_and_relations_stay_fp32_under_autocast():
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 9, 8), torch.randn(2, 4, 9, 8)
    mask = torch.ones(2, 9)
    from afrocomet.models.attention import attention_probs

    plain = attention_probs(q, k, mask, 8**-0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = attention_probs(q, k, mask, 8**-0.5)
        scores = RelationMatcher([(0, 0)], relation_heads=4)._scores(q.transpose(1, 2).reshape(2, 9, 32))
    assert inside.dtype == scores.dtype == torch.float32
    torch.testing.assert_close(inside, plain, atol=1e-6, rtol=0)


def test_matcher_capture_context_and_base_model_calls():
    student, teacher = student_teacher()
    matcher = build_matcher("mean", student.config, teacher.config)
    ids, mask = batch()
    expected = matching_loss(matcher, student, teacher, ids, mask)
    with pytest.raises(InternalError, match="matcher.capture"):
        matcher.loss(mask)
    with matcher.capture(student, teacher):
        with torch.inference_mode():
            teacher.base_model(input_ids=ids, attention_mask=mask)  # the MLM path calls the encoder directly
        student.base_model(input_ids=ids, attention_mask=mask)
        got = matcher.loss(mask)
    torch.testing.assert_close(got, expected)
    assert not student.roberta.encoder.layer[0].attention.self.query._forward_hooks
