"""Student initialisation from the teacher (models/init.py)."""

from __future__ import annotations

import pytest
import torch

from afrocomet.config import RunConfig
from afrocomet.errors import AfroCometError
from afrocomet.models.build import build_model
from afrocomet.models.init import init_from_teacher, pca_basis
from afrocomet.models.presets import get_preset
from afrocomet.run import run_variants

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = 300


def pair(student_preset: str = "tiny-student", **student_overrides):
    teacher = build_model("tiny-teacher", "mlm", vocab_size=VOCAB, seed=0)
    config = get_preset(student_preset).to_config(vocab_size=VOCAB, **student_overrides)
    return build_model(config, "mlm", seed=1), teacher


def covariance(x: torch.Tensor) -> torch.Tensor:
    x = x.double() - x.double().mean(0)
    return x.T @ x / (x.shape[0] - 1)


def test_basis_is_orthonormal_top_components():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 12, generator=g) @ torch.randn(12, 12, generator=g)  # correlated features
    basis = pca_basis(x, 5, chunk=64)  # several chunks
    w = basis.components.double()
    assert w.shape == (12, 5)
    assert torch.allclose(w.T @ w, torch.eye(5, dtype=torch.float64), atol=1e-5)
    eigenvalues = torch.linalg.eigvalsh(covariance(x)).flip(0)
    assert torch.allclose(basis.variances.double(), eigenvalues[:5], rtol=1e-4)
    assert torch.allclose(covariance(x) @ w, w * eigenvalues[:5], atol=1e-3 * float(eigenvalues[0]))
    assert basis.explained == pytest.approx(float(eigenvalues[:5].sum() / eigenvalues.sum()), rel=1e-5)
    with pytest.raises(AfroCometError):
        pca_basis(x, 13)


def test_student_from_teacher_shapes_variance_and_forward():
    student, teacher = pair()
    shapes = {k: v.shape for k, v in student.state_dict().items()}
    report = init_from_teacher(student, teacher)
    assert {k: v.shape for k, v in student.state_dict().items()} == shapes
    assert report["layer_map"] == [(0, 1)] and report["attention"] == ["heads"] and report["feed_forward"] == [True]
    assert report["lm_head"] is True
    t_words = teacher.roberta.embeddings.word_embeddings.weight.detach()
    s_words = student.roberta.embeddings.word_embeddings.weight.detach()
    # the student's embeddings keep exactly the top-32 share of the teacher's embedding variance
    t_var, s_var = torch.trace(covariance(t_words)), torch.trace(covariance(s_words))
    top = torch.linalg.eigvalsh(covariance(t_words)).flip(0)[:32].sum()
    assert float(s_var / t_var) == pytest.approx(report["explained_variance"], rel=1e-4)
    assert float(top / t_var) == pytest.approx(report["explained_variance"], rel=1e-4)
    assert student.lm_head.decoder.weight is student.roberta.embeddings.word_embeddings.weight  # still tied
    ids = torch.randint(3, VOCAB, (2, 9))
    logits = student(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (2, 9, VOCAB) and torch.isfinite(logits).all()


def test_embedding_sum_is_the_projected_teacher_sum_and_heads_are_picked():
    student, teacher = pair()
    init_from_teacher(student, teacher)
    w = pca_basis(teacher.roberta.embeddings.word_embeddings.weight.detach(), 32).components
    s_emb, t_emb = student.roberta.embeddings, teacher.roberta.embeddings
    for emb in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        t, s = getattr(t_emb, emb).weight.detach(), getattr(s_emb, emb).weight.detach()
        assert torch.allclose(s, t @ w, atol=1e-5), emb
    s_q = student.roberta.encoder.layer[0].attention.self.query.weight.detach()  # [2 heads * 16, 32]
    t_q = teacher.roberta.encoder.layer[1].attention.self.query.weight.detach() @ w  # [4 heads * 16, 32]
    picked = [h for h in range(4) if any(torch.allclose(s_q[r * 16:(r + 1) * 16], t_q[h * 16:(h + 1) * 16], atol=1e-5)
                                         for r in range(2))]
    assert len(picked) == 2  # two of the teacher's four heads, copied whole


def test_other_head_size_is_projected():
    student, teacher = pair(num_attention_heads=4)  # head size 8 vs the teacher's 16
    report = init_from_teacher(student, teacher)
    assert report["attention"] == ["projected"]
    ids = torch.randint(3, VOCAB, (1, 5))
    assert torch.isfinite(student(input_ids=ids).logits).all()


def test_needs_same_vocabulary_and_a_narrower_student():
    teacher = build_model("tiny-teacher", "mlm", vocab_size=VOCAB, seed=0)
    with pytest.raises(AfroCometError, match="vocabulary"):
        init_from_teacher(build_model("tiny-student", "mlm", vocab_size=VOCAB + 1, seed=1), teacher)
    wide = get_preset("tiny-student").to_config(vocab_size=VOCAB, hidden_size=128, num_attention_heads=2)
    with pytest.raises(AfroCometError, match="no wider"):
        init_from_teacher(build_model(wide, "mlm", seed=1), teacher)


def test_compare_init_adds_the_other_init_as_a_variant():
    config = RunConfig(ablations=False)
    assert [v.system for v in run_variants(config)] == ["student"]
    config.compare_init = True
    extra = run_variants(config)[-1]
    assert (extra.system, extra.model) == ("student_teacher_init", {"student_init": "teacher"})
    config.model.student_init = "teacher"
    assert run_variants(config)[-1].system == "student_random_init"
