"""Student initialisation from the teacher (`model.student_init: teacher`), and the pieces that
`student_init: layers` (models/layer_copy.py) shares with it; models/student_init.py chooses.

One shared basis W [Ht, Hs]: the top-Hs principal directions of the teacher's word embeddings
(orthonormal columns, from the eigenvectors of their covariance). A student hidden vector stands
for the teacher's projected onto it, x_s = Wᵀ x_t (so x_t ≈ W x_s), and every weight is carried
over in that basis:

- embeddings: word, position and token-type tables E_s = E_t W. The map is linear, so the
  student's pre-LayerNorm sum (word + position + type) is exactly the projection of the teacher's.
  Positions are matched by number: XLM-R numbers them from padding_idx + 1 = 2, BERT from 0
  (`position_offset`), so a BERT teacher's row p goes to an XLM-R student's row p + 2. A student
  with fewer positions takes the first ones; extra student positions stay as they are. Token type
  0 (the only one the run feeds) maps to type 0.
- every LayerNorm: β_s = Wᵀ β_t (a vector rotates exactly) and γ_s = diag(Wᵀ diag(γ_t) W), i.e.
  γ_s,j = Σ_i W_ij² γ_t,i, the closest per-feature scale in the new basis. Approximate: LayerNorm
  centres over the features, a direction the basis does not keep.
- student layer i from teacher layer j of the uniform layer map (`uniform_layer_map`: the last
  layers meet, as in the attention matching):
  - attention, when head sizes are equal ("heads"): the student keeps the Hs/d teacher heads that
    write most into the kept subspace (largest ‖Wᵀ O_t[:, head]‖_F), in their order. Their Q/K/V
    rows become W_s = W_t[head rows] W (biases copied); the output is O_s = Wᵀ O_t[:, head columns],
    b_s = Wᵀ b_t. Head sizes differ ("projected"): heads are merged by the basis on both sides,
    W_s = Wᵀ W_t W (b_s = Wᵀ b_t) for Q/K/V and O, and the student's heads split the result.
  - feed-forward, when the student's is not wider: the Is teacher neurons with the largest
    ‖W_in[n] W‖·‖Wᵀ W_out[:, n]‖ (those that read from and write into the subspace most), with
    W_in,s = W_in,t[kept] W, W_out,s = Wᵀ W_out,t[:, kept], b_out,s = Wᵀ b_out,t. Else random.
- masked-LM head (both masked LMs; XLM-R `lm_head` or BERT `cls.predictions.transform`): dense
  Wᵀ D W, its LayerNorm as above, the vocabulary bias copied (the decoder is tied to the word
  embeddings). A teacher without a head (an encoder alone) leaves the student's as it is. Classification heads are left as they are.

Requires the teacher's vocabulary (the teacher's embedding rows must mean the student's tokens;
a teacher may have extra rows past the tokenizer's ids, as multilingual-e5's 250,037 for 250,002
pieces) and a student no wider than the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from afrocomet.errors import AfroCometError
from afrocomet.models.attention import encoder_layers, uniform_layer_map

INIT_MODES = ("random", "teacher", "layers")  # how models/student_init.py can start a student


@dataclass
class Basis:
    components: torch.Tensor  # [Ht, k] orthonormal columns, by decreasing variance
    variances: torch.Tensor  # [k] the variance along each (eigenvalues of the covariance)
    total_variance: float  # trace of the covariance (all Ht directions)

    @property
    def explained(self) -> float:
        """Share of the embeddings' variance the k directions keep."""
        return float(self.variances.sum()) / self.total_variance


def pca_basis(embeddings: torch.Tensor, k: int, chunk: int = 16384) -> Basis:
    """Top-k principal directions of the rows of `embeddings` [V, H] (covariance in fp64, by chunks)."""
    v, h = embeddings.shape
    if not 0 < k <= h:
        raise AfroCometError(f"cannot keep {k} principal directions of {h}-wide embeddings")
    mean = embeddings.double().mean(0)  # [H]
    cov = torch.zeros(h, h, dtype=torch.float64)
    for start in range(0, v, chunk):
        x = embeddings[start:start + chunk].double() - mean  # [c, H]
        cov += x.T @ x
    cov /= max(v - 1, 1)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k]  # [k], [H, k]
    signs = torch.sign(vectors.gather(0, vectors.abs().argmax(0, keepdim=True)))  # largest entry positive
    vectors = vectors * signs
    return Basis(vectors.float(), values.clamp_min(0).float(), float(torch.trace(cov)))


def _carry_layer_norm(s_ln: nn.LayerNorm, t_ln: nn.LayerNorm, w: torch.Tensor | None) -> None:
    """The LayerNorm in the basis `w` (None: copied as it is)."""
    if w is None:
        s_ln.load_state_dict(t_ln.state_dict())
        return
    s_ln.weight.copy_((w * w).T @ t_ln.weight)  # γ_s,j = Σ_i W_ij² γ_t,i
    s_ln.bias.copy_(w.T @ t_ln.bias)


def _rows(table: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Embedding rows [n, Ht] in the basis `w` [Ht, Hs] (None: as they are)."""
    return table if w is None else table @ w


def position_offset(config) -> int:
    """The row of position 0: pad_token_id + 1 for XLM-R/RoBERTa-style models (2), 0 for BERT."""
    from afrocomet.tokenizer import OFFSET_POSITIONS

    return config.pad_token_id + 1 if config.model_type in OFFSET_POSITIONS else 0


def carry_embeddings(student: nn.Module, teacher: nn.Module, w: torch.Tensor | None) -> int:
    """Word, position and token-type tables and their LayerNorm in the basis `w` (None: copied as
    they are), positions matched by number; returns how many position rows were carried."""
    s_emb, t_emb = student.base_model.embeddings, teacher.base_model.embeddings
    s_words = s_emb.word_embeddings.weight  # [Vs, Hs]; a teacher's extra rows (no token gives them) are left out
    s_words.copy_(_rows(t_emb.word_embeddings.weight[:s_words.shape[0]], w))
    s_pos, t_pos = s_emb.position_embeddings.weight, t_emb.position_embeddings.weight
    s_off, t_off = position_offset(student.config), position_offset(teacher.config)
    if s_off == t_off:  # same numbering: the same rows
        s_off = t_off = 0
    positions = min(s_pos.shape[0] - s_off, t_pos.shape[0] - t_off)  # position p: row p + offset on each side
    s_pos[s_off:s_off + positions].copy_(_rows(t_pos[t_off:t_off + positions], w))
    s_type, t_type = s_emb.token_type_embeddings.weight, t_emb.token_type_embeddings.weight
    n = min(s_type.shape[0], t_type.shape[0])
    s_type[:n].copy_(_rows(t_type[:n], w))
    _carry_layer_norm(s_emb.LayerNorm, t_emb.LayerNorm, w)
    return positions


def _attention(s_layer: nn.Module, t_layer: nn.Module, w: torch.Tensor) -> str:
    """Heads picked ("heads") when head sizes match, else all heads merged by the basis ("projected")."""
    s_self, t_self = s_layer.attention.self, t_layer.attention.self
    t_out, s_out = t_layer.attention.output.dense, s_layer.attention.output.dense  # [H, heads*d]
    d = s_self.attention_head_size
    if d == t_self.attention_head_size and s_self.num_attention_heads <= t_self.num_attention_heads:
        written = (w.T @ t_out.weight).view(w.shape[1], -1, d).pow(2).sum((0, 2))  # [Ht heads]
        heads = sorted(written.topk(s_self.num_attention_heads).indices.tolist())
        cols = torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads])  # [Hs]
        rows, mode = lambda m: m[cols], "heads"  # noqa: E731
    else:  # the output side of Q/K/V and the input side of O in the same basis
        cols, rows, mode = None, (lambda m: w.T @ m), "projected"  # noqa: E731
    for kind in ("query", "key", "value"):
        s_lin, t_lin = getattr(s_self, kind), getattr(t_self, kind)
        s_lin.weight.copy_(rows(t_lin.weight) @ w)  # [Hs, Hs]
        s_lin.bias.copy_(rows(t_lin.bias))
    s_out.weight.copy_(w.T @ (t_out.weight[:, cols] if cols is not None else t_out.weight @ w))  # [Hs, Hs]
    s_out.bias.copy_(w.T @ t_out.bias)
    _carry_layer_norm(s_layer.attention.output.LayerNorm, t_layer.attention.output.LayerNorm, w)
    return mode


def _feed_forward(s_layer: nn.Module, t_layer: nn.Module, w: torch.Tensor) -> bool:
    s_in, t_in = s_layer.intermediate.dense, t_layer.intermediate.dense  # [I, H]
    s_out, t_out = s_layer.output.dense, t_layer.output.dense  # [H, I]
    if s_in.out_features > t_in.out_features:
        return False
    importance = (t_in.weight @ w).norm(dim=1) * (w.T @ t_out.weight).norm(dim=0)  # [It]
    kept = sorted(importance.topk(s_in.out_features).indices.tolist())
    s_in.weight.copy_(t_in.weight[kept] @ w)
    s_in.bias.copy_(t_in.bias[kept])
    s_out.weight.copy_(w.T @ t_out.weight[:, kept])
    s_out.bias.copy_(w.T @ t_out.bias)
    _carry_layer_norm(s_layer.output.LayerNorm, t_layer.output.LayerNorm, w)
    return True


def head_parts(model: nn.Module) -> tuple[nn.Linear, nn.LayerNorm, nn.Parameter] | None:
    """(dense, LayerNorm, vocabulary bias) of a masked-LM head: XLM-R `lm_head`, BERT
    `cls.predictions` (its `transform`); None for a model without one (e.g. an encoder alone)."""
    head = getattr(model, "lm_head", None)
    if head is not None:
        return head.dense, head.layer_norm, head.bias
    predictions = getattr(getattr(model, "cls", None), "predictions", None)
    if predictions is not None:
        return predictions.transform.dense, predictions.transform.LayerNorm, predictions.bias
    return None


def _lm_head(student: nn.Module, teacher: nn.Module, w: torch.Tensor) -> bool:
    s_head, t_head = head_parts(student), head_parts(teacher)
    if s_head is None or t_head is None:
        return False
    (s_dense, s_norm, s_bias), (t_dense, t_norm, t_bias) = s_head, t_head
    s_dense.weight.copy_(w.T @ t_dense.weight @ w)
    s_dense.bias.copy_(w.T @ t_dense.bias)
    _carry_layer_norm(s_norm, t_norm, w)
    s_bias.copy_(t_bias[:s_bias.shape[0]])
    return True


def check_vocabulary(student_config, teacher_config, mode: str = "teacher") -> None:
    """Raise unless the teacher's embedding rows cover the student's tokens (student_init=`mode`)."""
    if student_config.vocab_size > teacher_config.vocab_size:  # fewer: the tokenizer gives no id of the rest
        raise AfroCometError(
            f"student_init={mode} needs the teacher's vocabulary: student has {student_config.vocab_size:,} "
            f"tokens, teacher {teacher_config.vocab_size:,} (use the teacher's tokenizer, or student_init=random)")


def check_compatible(student_config, teacher_config) -> None:
    """Raise unless a student of `student_config` can be initialised from this teacher."""
    check_vocabulary(student_config, teacher_config)
    if student_config.hidden_size > teacher_config.hidden_size:
        raise AfroCometError(
            f"student_init=teacher needs a student no wider than the teacher (hidden {student_config.hidden_size} "
            f"> {teacher_config.hidden_size}); use student_init=random")


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module) -> dict:
    """Overwrite `student`'s encoder (and masked-LM head) from `teacher` as the module docstring says.

    Returns what was done: {"explained_variance", "layer_map", "attention": [bool per layer],
    "feed_forward": [bool per layer], "lm_head": bool}.
    """
    check_compatible(student.config, teacher.config)
    t_words = teacher.base_model.embeddings.word_embeddings.weight.detach().float().cpu()  # [V, Ht]
    basis = pca_basis(t_words, student.config.hidden_size)
    device = next(student.parameters()).device
    w = basis.components.to(device)  # [Ht, Hs]
    s_layers, t_layers = encoder_layers(student), encoder_layers(teacher)
    layer_map = uniform_layer_map(len(s_layers), len(t_layers))
    t = fp32_on(teacher, device)
    carry_embeddings(student, t, w)
    report = {"explained_variance": round(basis.explained, 6), "layer_map": layer_map, "attention": [],
              "feed_forward": []}
    for i, j in layer_map:
        report["attention"].append(_attention(s_layers[i], encoder_layers(t)[j], w))
        report["feed_forward"].append(_feed_forward(s_layers[i], encoder_layers(t)[j], w))
    report["lm_head"] = _lm_head(student, t, w)
    return report


def fp32_on(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` itself when already fp32 on `device`, else an fp32 copy there (the teacher is not moved)."""
    p = next(model.parameters())
    if p.device == device and p.dtype == torch.float32:
        return model
    import copy

    return copy.deepcopy(model).to(device, torch.float32)
