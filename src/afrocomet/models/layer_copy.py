"""Student initialisation by copying the teacher's layers (`model.student_init: layers`).

DistilBERT's rule: a student of the teacher's width takes the teacher's embeddings and one teacher
layer out of every k, whole. Nothing is projected, so a student with every layer copied computes
exactly the teacher's function (`copy_layers` makes it so; the tests check it to float tolerance).

- embeddings: word (the student's rows; a teacher's extra rows, that no token gives, are left out),
  position, token type 0 and their LayerNorm, by `init.carry_embeddings` with no basis: positions
  matched by number (a BERT teacher's row p is an XLM-R student's row p + 2).
- layers: student layer i <- teacher layer j of `uniform_layer_map`, j = round((i + 1) · Lt / Ls) - 1:
  every k-th layer when Ls divides Lt (k = Lt / Ls), ending at the last one (12 -> 6: 1, 3, 5, 7, 9,
  11; 12 -> 3: 3, 7, 11). The same map as the attention matching of the run (student layer i learns
  teacher layer j's attention maps, and starts as that layer) and as `student_init: teacher`, so the
  two initialisations differ only by the PCA projection. (DistilBERT's released script took 0, 2, 4,
  7, 9, 11 of BERT's 12: it keeps the first layer too; the last layers meet either way.) A layer is
  copied whole: attention (query, key, value, output, LayerNorm), feed-forward and its LayerNorm.
- masked-LM head where both are masked LMs (XLM-R `lm_head`, BERT `cls.predictions.transform`): the
  dense layer, its LayerNorm and the vocabulary bias (the student's rows); the decoder is tied to the
  word embeddings just copied (an untied student decoder is copied too). The pooler where both have one.
- LayerNorm epsilon: the teacher's, on every LayerNorm of the student and in its config (XLM-R presets
  use 1e-5, BERT and multilingual-e5 1e-12): it is part of the function being copied.

Requires the teacher's vocabulary (as `student_init: teacher`), and the teacher's hidden size, head
count (equal widths and heads: the same head size and the same split of Q/K/V into heads),
feed-forward size, activation and position embedding type, with no more layers than the teacher.
The student's dropout rates stay its own (training settings, not weights).
"""

from __future__ import annotations

import torch
from torch import nn

from afrocomet.errors import AfroCometError
from afrocomet.models.attention import encoder_layers, uniform_layer_map
from afrocomet.models.init import carry_embeddings, check_vocabulary, fp32_on, head_parts

# (config field, what it is): a student must equal the teacher in each to copy whole layers
SHAPE = (("hidden_size", "hidden size"), ("num_attention_heads", "attention heads"),
         ("intermediate_size", "feed-forward size"), ("hidden_act", "activation"),
         ("position_embedding_type", "position embedding type"))


def shape_problem(student_config, teacher_config) -> str | None:
    """What keeps the teacher's layers from being copied into this student whole, or None."""
    for name, what in SHAPE:  # (transformers 5 configs have no position_embedding_type: absolute)
        s, t = (getattr(c, name, "absolute" if name == "position_embedding_type" else None)
                for c in (student_config, teacher_config))
        if s != t:
            return f"student {what} {s} != teacher's {t}"
    s, t = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    if s > t:
        return f"student has {s} layers, more than the teacher's {t}"
    return None


def check_layer_copy(student_config, teacher_config) -> None:
    """Raise unless `copy_layers` can initialise a student of `student_config` from this teacher."""
    check_vocabulary(student_config, teacher_config, "layers")
    problem = shape_problem(student_config, teacher_config)
    if problem:
        raise AfroCometError(f"student_init=layers copies the teacher's layers whole, so the student needs the "
                             f"teacher's shape: {problem}; use student_init=teacher (PCA projection) or random")


@torch.no_grad()
def copy_layers(student: nn.Module, teacher: nn.Module) -> dict:
    """Overwrite `student`'s embeddings, layers (and masked-LM head, pooler) with `teacher`'s, as the
    module docstring says. Returns what was done: {"layer_map": [(student, teacher) layer], "positions":
    position rows copied, "lm_head": bool, "pooler": bool, "layer_norm_eps": the student's epsilon}."""
    check_layer_copy(student.config, teacher.config)
    t = fp32_on(teacher, next(student.parameters()).device)
    positions = carry_embeddings(student, t, None)
    s_layers, t_layers = encoder_layers(student), encoder_layers(t)
    layer_map = uniform_layer_map(len(s_layers), len(t_layers))
    for i, j in layer_map:
        _copy(s_layers[i], t_layers[j], f"layer {j}")
    s_pool, t_pool = getattr(student.base_model, "pooler", None), getattr(t.base_model, "pooler", None)
    if s_pool is not None and t_pool is not None:
        _copy(s_pool, t_pool, "pooler")
    eps = float(t.config.layer_norm_eps)
    for module in student.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps
    student.config.layer_norm_eps = eps
    return {"layer_map": layer_map, "positions": positions, "lm_head": _lm_head(student, t),
            "pooler": s_pool is not None and t_pool is not None, "layer_norm_eps": eps}


def _copy(s_module: nn.Module, t_module: nn.Module, what: str) -> None:
    """Every weight of `t_module` into `s_module` (the same names and shapes, else one line)."""
    try:
        s_module.load_state_dict(t_module.state_dict())
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [type(exc).__name__]
        raise AfroCometError(f"student_init=layers: the teacher's {what} does not fit the student's "
                             f"({first[0].strip()})") from exc


def _lm_head(student: nn.Module, teacher: nn.Module) -> bool:
    s_head, t_head = head_parts(student), head_parts(teacher)
    if s_head is None or t_head is None:
        return False
    (s_dense, s_norm, s_bias), (t_dense, t_norm, t_bias) = s_head, t_head
    _copy(s_dense, t_dense, "masked-LM head")
    _copy(s_norm, t_norm, "masked-LM head LayerNorm")
    s_bias.copy_(t_bias[:s_bias.shape[0]])
    s_dec, t_dec = student.get_output_embeddings(), teacher.get_output_embeddings()
    if s_dec.weight is not student.get_input_embeddings().weight:  # an untied decoder: its own rows
        s_dec.weight.copy_(t_dec.weight[:s_dec.weight.shape[0]])
    if s_dec.bias is not None and s_dec.bias is not s_bias and t_dec.bias is not None:
        s_dec.bias.copy_(t_dec.bias[:s_dec.bias.shape[0]])
    return True
