"""Capture attention maps from chosen layers of an XLM-R (or BERT/RoBERTa-shaped) encoder.

We never ask the model for `output_attentions` (that materialises every layer's maps, and SDPA /
flash attention return none). Instead forward hooks on the matched layers' `query`, `key` (and
`value`) Linear modules keep their outputs, and a hook on the self-attention module turns them into

    probs = softmax(Q Kᵀ · head_size^-0.5, masked on padded keys)       [b, heads, s, s]

in fp32 — exactly what transformers' `eager_attention_forward` computes before dropout (XLM-R uses
no relative positions). So the maps are the same whichever attention implementation runs, and
dropout never touches them. The padding mask is read from the `attention_mask` the base model is
called with ([b, s], 1 real / 0 pad; None means no padding).

Module path in transformers 5: `model.base_model.encoder.layer[i].attention.self` with Linear
children `query`, `key`, `value` ([b, s, hidden] -> [b, s, heads * head_size]).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from afrocomet.errors import AfroCometError

KEEP_MODES = ("pooled", "heads", "qkv")


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer layers (`base_model.encoder.layer`)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise AfroCometError(
            f"cannot find encoder layers in {type(model).__name__}: expected base_model.encoder.layer "
            "(an XLM-R, RoBERTa or BERT model)"
        )
    return layers


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student layer i <-> teacher layer round((i + 1) · Lt / Ls) - 1 (0-based, halves round up).

    E.g. 4 student, 12 teacher layers -> [(0, 2), (1, 5), (2, 8), (3, 11)]: the last layers meet.
    """
    if student_layers < 1 or teacher_layers < 1:
        raise AfroCometError(
            f"layer counts must be >= 1, got student {student_layers}, teacher {teacher_layers}"
        )
    pairs = []
    for i in range(student_layers):
        # round-half-up of (i+1)·Lt/Ls in exact integer arithmetic
        j = (2 * (i + 1) * teacher_layers + student_layers) // (2 * student_layers)
        pairs.append((i, max(j, 1) - 1))
    return pairs


def validate_layer_map(
    layer_map: Iterable[Sequence[int]], student_layers: int, teacher_layers: int
) -> list[tuple[int, int]]:
    """Check a user-given [(student_layer, teacher_layer), ...] map (0-based) and return it as tuples."""
    pairs = []
    for pair in layer_map:
        if len(pair) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair):
            raise AfroCometError(f"layer map entry {list(pair)} must be two integers [student, teacher]")
        s, t = int(pair[0]), int(pair[1])
        if not 0 <= s < student_layers:
            raise AfroCometError(
                f"layer map: student layer {s} is out of range (valid 0..{student_layers - 1})"
            )
        if not 0 <= t < teacher_layers:
            raise AfroCometError(
                f"layer map: teacher layer {t} is out of range (valid 0..{teacher_layers - 1})"
            )
        pairs.append((s, t))
    if not pairs:
        raise AfroCometError("layer map is empty: give at least one [student, teacher] pair")
    if len(set(pairs)) != len(pairs):
        raise AfroCometError(f"layer map has a repeated pair: {pairs}")
    return pairs


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[b, s, heads * d] -> [b, heads, s, d]."""
    b, s, width = x.shape
    if width % heads:
        raise AfroCometError(f"width {width} is not divisible by {heads} heads")
    return x.view(b, s, heads, width // heads).transpose(1, 2)


def attention_probs(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor, scaling: float
) -> torch.Tensor:
    """softmax(Q Kᵀ · scaling) over keys with padded keys removed, in fp32.

    query, key: [b, h, s, d]; mask: [b, s] (1/True real). Returns [b, h, s, s]; padded keys get
    exactly 0; every row (padded queries too) sums to 1 over the real keys.
    """
    with torch.autocast(query.device.type, enabled=False):  # fp32 even inside an autocast region
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling  # [b, h, s, s]
    keys = mask.to(device=scores.device, dtype=torch.bool)[:, None, None, :]  # [b, 1, 1, s]
    scores = scores.masked_fill(~keys, torch.finfo(torch.float32).min)
    return scores.softmax(dim=-1)


def _usable(t: torch.Tensor) -> torch.Tensor:
    """A tensor captured under inference_mode, cloned so autograd can save it outside that mode."""
    if t.is_inference() and not torch.is_inference_mode_enabled():
        return t.clone()
    return t


class AttentionCapture:
    """Keep attention information of `layers` of `model` during its forward passes.

    keep="pooled": head-mean probabilities [b, s, s] are computed in the hook, Q/K dropped at once
                   (least memory; what the `mean` matcher needs).
    keep="heads":  per-head probabilities [b, h, s, s] (the `projection` matcher).
    keep="qkv":    raw Q/K/V projections [b, s, hidden] (the `relations` matcher); maps are then
                   computed on demand.

    Use as a context manager or with attach()/detach(). Each forward of the base model starts a
    fresh capture; `clear()` frees memory. Gradients flow through the captured tensors into the
    model's parameters when it runs with grad; under `torch.inference_mode()` they are inference
    tensors, cloned (once) when read outside that mode so losses can use them. With activation
    checkpointing (non-reentrant) keep the capture attached until backward is done: recomputed
    layers run the hooks again.
    """

    def __init__(self, model: nn.Module, layers: Iterable[int], keep: str = "pooled"):
        if keep not in KEEP_MODES:
            raise AfroCometError(f"unknown capture mode {keep!r}: choose one of {', '.join(KEEP_MODES)}")
        self.model, self.keep = model, keep
        self.encoder_layers = encoder_layers(model)
        self.layers = sorted(set(int(i) for i in layers))
        for i in self.layers:
            if not 0 <= i < len(self.encoder_layers):
                last = len(self.encoder_layers) - 1
                name = type(model).__name__
                raise AfroCometError(f"layer {i} is out of range for {name} (valid 0..{last})")
        self.mask: torch.Tensor | None = None  # bool [b, s] of the last forward
        self._given_mask: torch.Tensor | None = None
        self._stash: dict[int, dict[str, torch.Tensor]] = {}
        self._out: dict[int, object] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- hooks ---------------------------------------------------------------------------------
    def attach(self) -> AttentionCapture:
        if self._handles:
            return self
        base = getattr(self.model, "base_model", self.model)
        self._handles.append(base.register_forward_pre_hook(self._on_model_start, with_kwargs=True))
        kinds = ("query", "key", "value") if self.keep == "qkv" else ("query", "key")
        for i in self.layers:
            attn = self.encoder_layers[i].attention.self
            for kind in kinds:
                self._handles.append(getattr(attn, kind).register_forward_hook(self._stash_hook(i, kind)))
            self._handles.append(attn.register_forward_hook(self._layer_hook(i, attn)))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> AttentionCapture:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def clear(self) -> None:
        self.mask, self._given_mask = None, None
        self._stash.clear()
        self._out.clear()

    def _on_model_start(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.clear()
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is not None and mask.dim() != 2:
            raise AfroCometError(
                f"attention capture needs a [batch, seq] padding mask, got shape {tuple(mask.shape)}"
            )
        self._given_mask = mask

    def _stash_hook(self, layer: int, kind: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self._stash.setdefault(layer, {})[kind[0]] = output  # [b, s, heads * head_size]

        return hook

    def _layer_hook(self, layer: int, attn: nn.Module):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            qkv = self._stash.pop(layer)
            q = qkv["q"]  # [b, s, heads * head_size]
            if self.mask is None:  # first matched layer of this forward
                given = self._given_mask
                if given is None:
                    given = torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)  # [b, s]
                self.mask = given.bool()
            if self.keep == "qkv":
                self._out[layer] = qkv
                return
            heads, scaling = attn.num_attention_heads, attn.scaling
            probs = attention_probs(split_heads(q, heads), split_heads(qkv["k"], heads), self.mask, scaling)
            self._out[layer] = probs.mean(dim=1) if self.keep == "pooled" else probs

        return hook

    # -- results -------------------------------------------------------------------------------
    def _get(self, layer: int) -> object:
        if layer not in self._out:
            raise AfroCometError(f"no attention captured for layer {layer}: run the model forward first")
        out = self._out[layer]
        first = out["q"] if isinstance(out, dict) else out
        if torch.is_grad_enabled() and self.model.training and not first.requires_grad:
            if any(p.requires_grad for p in self.model.parameters()):
                raise AfroCometError(
                    f"attention of layer {layer} carries no gradient although {type(self.model).__name__} "
                    "trains: gradient checkpointing with use_reentrant=True hides it; enable it with "
                    "activation_checkpointing_enable() (non-reentrant by default)"
                )
        return out

    def _attn(self, layer: int) -> nn.Module:
        return self.encoder_layers[layer].attention.self

    def maps(self) -> dict[int, torch.Tensor]:
        """Per-head attention probabilities {layer: [b, h, s, s]} (keep="heads" or "qkv")."""
        if self.keep == "pooled":
            raise AfroCometError('per-head maps were not kept: create the capture with keep="heads"')
        result = {}
        for i in self.layers:
            out = self._get(i)
            if self.keep == "heads":
                result[i] = self._out[i] = _usable(out)
            else:
                attn = self._attn(i)
                q, k = (split_heads(_usable(out[x]), attn.num_attention_heads) for x in "qk")
                result[i] = attention_probs(q, k, self.mask, attn.scaling)
        return result

    def pooled(self) -> dict[int, torch.Tensor]:
        """Head-mean attention probabilities {layer: [b, s, s]}."""
        if self.keep == "pooled":
            result = {}
            for i in self.layers:
                result[i] = self._out[i] = _usable(self._get(i))
            return result
        return {i: m.mean(dim=1) for i, m in self.maps().items()}

    def qkv(self) -> dict[int, dict[str, torch.Tensor]]:
        """Raw projections {layer: {"q"|"k"|"v": [b, s, hidden]}} (keep="qkv")."""
        if self.keep != "qkv":
            raise AfroCometError('raw Q/K/V were not kept: create the capture with keep="qkv"')
        result = {}
        for i in self.layers:
            out = self._get(i)
            result[i] = self._out[i] = {x: _usable(t) for x, t in out.items()}
        return result
