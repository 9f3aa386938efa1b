"""Attention matching between student and teacher: three modes, one interface.

    matcher = build_matcher("mean", student.config, teacher.config)        # or a layer_map
    with matcher.capture(student, teacher):          # hooks on the matched layers only
        with torch.inference_mode():
            teacher(input_ids, attention_mask=mask)
        out = student(input_ids, attention_mask=mask)
        loss = matcher.loss(mask)                     # = matcher(student_capture, teacher_capture, mask)

Modes (each an nn.Module; only `projection` has parameters: give `matcher.parameters()` to the
optimiser with the student's, and leave the matcher out of the exported model):

- `mean`: head-mean maps [b, s, s] of each layer pair matched with attention_kl (or mse).
- `projection`: student per-head maps projected to the teacher's head count by a learned
  Hs -> Ht mixing (softmax rows: convex combinations keep them distributions; Hs·Ht parameters per
  pair, zero-initialised so it starts as the head mean), then matched head by head.
- `relations`: MiniLMv2 Q-Q, K-K, V-V self-attention relations with R relation heads:
  softmax(X_r X_rᵀ / sqrt(d_r)), KL teacher -> student. Needs no equal head counts or hidden sizes.

The loss is the mean over layer pairs (and, for relations, over the three relations), so its
scale is comparable across modes. Peak memory (P pairs, b batch, s sequence, H heads, R relation
heads, d hidden): mean keeps b·s² per captured layer for the teacher and b·Hs·s² (autograd) for
the student; projection b·(Hs + Ht)·s² per pair kept, plus b·Ht·s² of one pair at a time (the
loss is checkpointed per pair); relations 3·b·s·d stored per captured layer and a few b·R·s² of
one relation at a time (checkpointed per relation). Always O(b·P·H·s²); never s⁴.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from afrocomet.distill.losses import attention_kl, attention_mse, relation_loss
from afrocomet.errors import AfroCometError, InternalError
from afrocomet.models.attention import AttentionCapture, split_heads, uniform_layer_map, validate_layer_map

MODES = ("mean", "projection", "relations")
MAP_LOSSES = ("kl", "mse")


def _map_loss(name: str):
    if name not in MAP_LOSSES:
        raise AfroCometError(f"unknown attention loss {name!r}: choose one of {', '.join(MAP_LOSSES)}")
    return attention_kl if name == "kl" else attention_mse


class AttentionMatcher(nn.Module):
    """Common part: a layer map, what the captures must keep, and mask handling."""

    keep = "pooled"

    def __init__(self, layer_map: Sequence[tuple[int, int]]):
        super().__init__()
        self.layer_map = [(int(s), int(t)) for s, t in layer_map]

    @property
    def student_layers(self) -> list[int]:
        return sorted({s for s, _ in self.layer_map})

    @property
    def teacher_layers(self) -> list[int]:
        return sorted({t for _, t in self.layer_map})

    def captures(self, student: nn.Module, teacher: nn.Module | None) -> tuple[AttentionCapture, AttentionCapture | None]:
        """Unattached captures of exactly the layers and information this matcher needs
        (no teacher capture when `teacher` is None: its maps then come from a cache)."""
        return (
            AttentionCapture(student, self.student_layers, keep=self.keep),
            None if teacher is None else AttentionCapture(teacher, self.teacher_layers, keep=self.keep),
        )

    @contextlib.contextmanager
    def capture(self, student: nn.Module, teacher: nn.Module | None) -> Iterator[None]:
        """Attach both captures for the block; `loss(mask)` then uses them. Wrap the whole training
        (or at least forward *and* backward) when the student uses activation checkpointing.
        teacher=None captures the student only; pass the teacher's maps to `loss(mask, teacher=...)`."""
        self._active = self.captures(student, teacher)
        try:
            with self._active[0], self._active[1] or contextlib.nullcontext():
                yield
        finally:
            self._active = None

    def loss(self, mask: torch.Tensor | None = None, teacher=None) -> torch.Tensor:
        """forward() on the captures attached by `capture()`; `teacher` replaces the teacher's
        capture (an object with the same `pooled()` and `mask`, e.g. `distill.cache.CachedAttention`)."""
        if getattr(self, "_active", None) is None:
            raise InternalError("attention matcher: loss() needs `with matcher.capture(student, teacher):`")
        if teacher is not None and self.keep != "pooled":
            raise InternalError(f"{type(self).__name__} needs the teacher's live {self.keep}, not cached maps")
        teacher = self._active[1] if teacher is None else teacher
        if teacher is None:
            raise InternalError("attention matcher: no teacher capture and no cached teacher maps")
        return self(self._active[0], teacher, mask)

    @staticmethod
    def _mask(student: AttentionCapture, teacher: AttentionCapture, mask: torch.Tensor | None):
        mask = student.mask if mask is None else mask
        if mask is None or teacher.mask is None:
            raise InternalError("no attention captured: run the teacher and the student forward first")
        if teacher.mask.shape != mask.shape:
            raise InternalError(
                f"teacher saw a batch of shape {tuple(teacher.mask.shape)}, the student {tuple(mask.shape)}: "
                "attention matching needs both to see the same tokens"
            )
        return mask

    def extra_repr(self) -> str:
        return f"layer_map={self.layer_map}"


class MeanMatcher(AttentionMatcher):
    """Head-mean attention maps matched per layer pair (no parameters)."""

    keep = "pooled"

    def __init__(self, layer_map: Sequence[tuple[int, int]], loss: str = "kl"):
        super().__init__(layer_map)
        self.loss_name, self.map_loss = loss, _map_loss(loss)

    def forward(self, student: AttentionCapture, teacher: AttentionCapture, mask: torch.Tensor | None = None):
        mask = self._mask(student, teacher, mask)
        s_maps, t_maps = student.pooled(), teacher.pooled()  # {layer: [b, s, s]}
        losses = [self.map_loss(s_maps[s], t_maps[t], mask) for s, t in self.layer_map]
        return torch.stack(losses).mean()


class ProjectionMatcher(AttentionMatcher):
    """Student heads mixed into teacher heads by a learned softmax-normalised [Ht, Hs] matrix per pair."""

    keep = "heads"

    def __init__(
        self, layer_map: Sequence[tuple[int, int]], student_heads: int, teacher_heads: int, loss: str = "kl"
    ):
        super().__init__(layer_map)
        self.loss_name, self.map_loss = loss, _map_loss(loss)
        self.student_heads, self.teacher_heads = student_heads, teacher_heads
        # mixing logits, one [Ht, Hs] matrix per pair; zeros = every teacher head sees the head mean
        self.mixing = nn.Parameter(torch.zeros(len(self.layer_map), teacher_heads, student_heads))

    def forward(self, student: AttentionCapture, teacher: AttentionCapture, mask: torch.Tensor | None = None):
        mask = self._mask(student, teacher, mask)
        s_maps, t_maps = student.maps(), teacher.maps()  # {layer: [b, h, s, s]}
        weights = self.mixing.float().softmax(dim=-1)  # [P, Ht, Hs], rows sum to 1
        # checkpointed per pair: the [b, Ht, s, s] projections are rebuilt in backward, not kept
        losses = [checkpoint(self._pair_loss, weights[p], s_maps[s], t_maps[t], mask, use_reentrant=False)
                  for p, (s, t) in enumerate(self.layer_map)]
        return torch.stack(losses).mean()

    def _pair_loss(self, weights: torch.Tensor, s_map: torch.Tensor, t_map: torch.Tensor, mask: torch.Tensor):
        with torch.autocast(weights.device.type, enabled=False):
            projected = torch.einsum("th,bhqk->btqk", weights, s_map)  # [b, Ht, s, s]
        return self.map_loss(projected, t_map, mask)

    def extra_repr(self) -> str:
        return f"layer_map={self.layer_map}, heads {self.student_heads} -> {self.teacher_heads}"


class RelationMatcher(AttentionMatcher):
    """MiniLMv2 Q-Q, K-K, V-V self-attention relations with `relation_heads` heads."""

    keep = "qkv"

    def __init__(self, layer_map: Sequence[tuple[int, int]], relation_heads: int):
        super().__init__(layer_map)
        self.relation_heads = relation_heads

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        x = split_heads(x.float(), self.relation_heads)  # [b, R, s, d_r]
        with torch.autocast(x.device.type, enabled=False):  # fp32 even inside an autocast region
            return torch.matmul(x, x.transpose(-1, -2)) / math.sqrt(x.shape[-1])  # [b, R, s, s]

    def forward(self, student: AttentionCapture, teacher: AttentionCapture, mask: torch.Tensor | None = None):
        mask = self._mask(student, teacher, mask)
        s_qkv, t_qkv = student.qkv(), teacher.qkv()  # {layer: {"q"|"k"|"v": [b, s, hidden]}}
        # checkpointed per relation: the [b, R, s, s] scores are rebuilt in backward, so only one
        # relation's worth of s² tensors is alive at a time (+2% peak memory over KD alone at s=512,
        # instead of +24%: benchmarks/attention_memory.py)
        losses = [checkpoint(self._relation_loss, s_qkv[s][kind], t_qkv[t][kind], mask, use_reentrant=False)
                  for s, t in self.layer_map for kind in "qkv"]
        return torch.stack(losses).mean()

    def _relation_loss(self, s_x: torch.Tensor, t_x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return relation_loss(self._scores(s_x), self._scores(t_x), mask)

    def extra_repr(self) -> str:
        return f"layer_map={self.layer_map}, relation_heads={self.relation_heads}"


def default_relation_heads(
    student_hidden: int, teacher_hidden: int, teacher_heads: int, student_heads: int
) -> int:
    """Teacher heads if both hidden sizes divide by it, else student heads, else the largest divisor
    of gcd(hidden sizes) not above the larger head count."""
    for r in (teacher_heads, student_heads):
        if student_hidden % r == 0 and teacher_hidden % r == 0:
            return r
    common = math.gcd(student_hidden, teacher_hidden)
    return max(r for r in range(1, max(teacher_heads, student_heads) + 1) if common % r == 0)


def build_matcher(
    mode: str,
    student_config,
    teacher_config,
    layer_map: Iterable[Sequence[int]] | None = None,
    loss: str = "kl",
    relation_heads: int | None = None,
) -> AttentionMatcher:
    """The attention matcher `mode` ("mean", "projection", "relations") for two model configs.

    layer_map: [(student_layer, teacher_layer), ...] 0-based; None -> uniform_layer_map.
    loss: "kl" or "mse" for mean/projection (relations always use KL).
    relation_heads: R for relations; None -> default_relation_heads.
    """
    if mode not in MODES:
        raise AfroCometError(f"unknown attention matching mode {mode!r}: choose one of {', '.join(MODES)}")
    ls, lt = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    pairs = uniform_layer_map(ls, lt) if layer_map is None else validate_layer_map(layer_map, ls, lt)
    _map_loss(loss)
    if mode == "mean":
        return MeanMatcher(pairs, loss=loss)
    if mode == "projection":
        return ProjectionMatcher(
            pairs, student_config.num_attention_heads, teacher_config.num_attention_heads, loss=loss
        )
    hs, ht = student_config.hidden_size, teacher_config.hidden_size
    if relation_heads is None:
        relation_heads = default_relation_heads(
            hs, ht, teacher_config.num_attention_heads, student_config.num_attention_heads
        )
    if relation_heads < 1 or hs % relation_heads or ht % relation_heads:
        raise AfroCometError(
            f"relations: {relation_heads} relation heads must divide both hidden sizes "
            f"(student {hs}, teacher {ht}); try a divisor of {math.gcd(hs, ht)}"
        )
    return RelationMatcher(pairs, relation_heads)
