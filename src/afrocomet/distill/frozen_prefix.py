"""Frozen-prefix feature cache: a model fine-tuned with its embeddings and lowest N layers frozen
runs that frozen prefix once per training example, not every step.

With `freeze_teacher_embeddings` and `freeze_teacher_layers N` (run/teacher.py freeze_teacher) the
output of layer N-1 is, in eval mode, a pure function of the example's token ids. It is computed
once (eval mode: no dropout, under `inference_mode`) and stored per example at its real length:

- `hidden`: the states of every example one after the other, [sum of lengths, H], fp16 by default
  (fp32 where a value would overflow fp16, or when asked; `dtype` in the metadata says which);
- `offsets` [n + 1] (int64): where example i's rows start; `lengths` [n] (int64).

One safetensors file, `<cache root>/frozen-prefix/<key>.safetensors`, read memory-mapped
(`safetensors.safe_open`: only a batch's rows are read), written atomically. The key hashes the
frozen parameters (every state-dict tensor of the embeddings and layers 0..N-1), the config fields
that change their outputs, N, the storage dtype, the token ids of the examples and
`FORMAT_VERSION`: a changed frozen weight (vocabulary trimming, another teacher) or other data gives
another file; the trained (upper) weights are not in the key.

During the stage (`FrozenPrefix.feeding`, around the trainer's adaptor call) the model's own
forward runs with its embeddings standing in for the cached states and its encoder holding only
layers N..: masks, upper layers and head are the model's own code, in train mode (dropout as usual
there). The swap lasts for one forward; the model's modules and state-dict keys are unchanged
between calls, so checkpoints and the saved model are the full model's.

Behaviour change, only with the cache: without it the frozen prefix runs in train mode, with
dropout in the embeddings and layers 0..N-1 (and draws from the RNG); with it, the prefix is in
eval mode. With dropout 0 both give the same losses to fp16 storage precision
(tests/test_frozen_prefix.py). Dev evaluation keeps running the full model (eval mode, where the
frozen parts are the same computation). Only classification stages with no attention term use it
(masked-LM inputs change every epoch; a matcher would hook layers that no longer run);
`--no-frozen-cache` (StageConfig.frozen_cache) turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

from afrocomet.data.batching import Encoded, collate
from afrocomet.errors import AfroCometError

log = logging.getLogger("afrocomet")

FORMAT_VERSION = 1
DTYPE = torch.float16  # storage: half the disk of fp32; tests bound the logits' difference
_FP16_MAX = 65504.0
# config fields that change the frozen prefix's outputs for the same weights
_CONFIG_FIELDS = ("model_type", "hidden_size", "num_attention_heads", "hidden_act", "layer_norm_eps",
                  "position_embedding_type", "pad_token_id", "type_vocab_size", "_attn_implementation")


def cache_dir() -> Path:
    """`<cache root>/frozen-prefix` (the root as for AfriSenti: $AFROCOMET_CACHE, XDG, ~/.cache)."""
    from afrocomet.data.download import cache_root

    return cache_root() / "frozen-prefix"


def _parts(model: nn.Module) -> tuple[nn.Module, nn.ModuleList] | None:
    """(embeddings, encoder layers) of `model`'s base model, or None when it has no such shape."""
    base = getattr(model, "base_model", model)
    embeddings = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(embeddings, nn.Module) or not isinstance(layers, nn.ModuleList):
        return None
    return embeddings, layers


def frozen_layers(model: nn.Module) -> int | None:
    """N: how many of the lowest encoder layers are frozen (no parameter requires grad) together
    with the embeddings; None when the embeddings train (nothing below the head is fixed) or the
    model has no embeddings/encoder.layer. 0 means the embeddings alone are frozen."""
    parts = _parts(model)
    if parts is None or any(p.requires_grad for p in parts[0].parameters()):
        return None
    n = 0
    for layer in parts[1]:
        if any(p.requires_grad for p in layer.parameters()):
            break
        n += 1
    return n


# ----------------------------------------------------------------------------- key


def prefix_fingerprint(model: nn.Module, n: int) -> str:
    """sha256 of the frozen prefix: the embeddings' and layers 0..n-1's tensors and the config fields."""
    from afrocomet.distill.cache import hash_tensor

    embeddings, layers = _parts(model)
    h = hashlib.sha256()
    config = {k: getattr(model.config, k, None) for k in _CONFIG_FIELDS}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    named = [(f"embeddings.{k}", v) for k, v in embeddings.state_dict().items()]
    for i in range(n):
        named += [(f"layer.{i}.{k}", v) for k, v in layers[i].state_dict().items()]
    for name, tensor in sorted(named):
        hash_tensor(h, name, tensor)
    return h.hexdigest()


def prefix_key(model: nn.Module, n: int, data: Encoded, dtype: torch.dtype = DTYPE) -> str:
    """The content hash naming a cache file (see the module docstring for what goes in)."""
    from afrocomet.distill.cache import data_fingerprint

    parts = {"format": FORMAT_VERSION, "prefix": prefix_fingerprint(model, n), "layers": int(n),
             "dtype": str(dtype), "data": data_fingerprint(data)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------- the swap


class _Given(nn.Module):
    """Stands in for the embeddings for one forward: returns the given states, whatever it is passed."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden  # a plain attribute, not a buffer

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.hidden


@contextlib.contextmanager
def _swapped(model: nn.Module, layers: slice, hidden: torch.Tensor | None = None):
    """For one forward: the encoder holds only `layers` of its layers, and (with `hidden`) the
    embeddings are replaced by those states. Restored on exit, whatever happened."""
    base = getattr(model, "base_model", model)
    embeddings, full = _parts(model)
    base.encoder.layer = nn.ModuleList(list(full)[layers])
    if hidden is not None:
        base.embeddings = _Given(hidden)
    try:
        yield
    finally:
        base.encoder.layer = full
        base.embeddings = embeddings


# ----------------------------------------------------------------------------- build


def _prefix_pass(model: nn.Module, n: int, data: Encoded, pad_id: int, batch_size: int,
                 device: torch.device) -> list[torch.Tensor]:
    """Each example's states after the embeddings and layers 0..n-1, [l_i, H] fp32 on the CPU, in
    data order (eval mode, length-sorted batches, the model's own forward with its encoder cut)."""
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    states: list[torch.Tensor | None] = [None] * len(data)
    base = getattr(model, "base_model", model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _swapped(model, slice(0, n)):
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                batch = collate(data, index, pad_id)
                hidden = base(input_ids=batch["input_ids"].to(device),
                              attention_mask=batch["attention_mask"].to(device)).last_hidden_state  # [b, s, H]
                for row, i in enumerate(index):
                    states[i] = hidden[row, :len(data.ids[i])].to("cpu", torch.float32)
    finally:
        model.train(was_training)
    return states  # type: ignore[return-value]


def build_prefix_cache(path: str | Path, model: nn.Module, n: int, data: Encoded, pad_id: int, key: str, *,
                       dtype: torch.dtype = DTYPE, batch_size: int = 64, device: torch.device | str = "cpu") -> Path:
    """Run the frozen prefix (embeddings + layers 0..n-1) once over `data`; write the states to `path`
    atomically, in `dtype` (fp16 falls back to fp32, with a log line, where a value would overflow)."""
    from safetensors.torch import save_file

    from afrocomet.io import atomic_path

    states = _prefix_pass(model, n, data, pad_id, batch_size, torch.device(device))
    hidden = torch.cat(states)  # [sum of lengths, H]
    if dtype == torch.float16 and hidden.abs().max() > _FP16_MAX:
        log.info("frozen-prefix cache: states exceed the fp16 range; stored in fp32")
        dtype = torch.float32
    lengths = torch.tensor([len(ids) for ids in data.ids], dtype=torch.int64)
    tensors = {"hidden": hidden.to(dtype).contiguous(), "lengths": lengths,
               "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])}
    metadata = {"format": str(FORMAT_VERSION), "key": key, "layers": str(n), "dtype": str(dtype).split(".")[-1],
                "examples": str(len(data))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


# ----------------------------------------------------------------------------- read


class FrozenPrefix:
    """A cache file opened memory-mapped; `feeding(model, batch)` runs the model from it."""

    def __init__(self, path: str | Path, key: str | None = None):
        from safetensors import safe_open

        self.path = Path(path)
        try:
            self._file = safe_open(str(self.path), framework="pt")
            meta = self._file.metadata() or {}
            self.layers, self.dtype = int(meta["layers"]), meta["dtype"]
            self.lengths = self._file.get_tensor("lengths").tolist()
            self.offsets = self._file.get_tensor("offsets").tolist()
            self._hidden = self._file.get_slice("hidden")  # read per example, memory-mapped
            self.hidden_size = int(self._hidden.get_shape()[1])
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            raise AfroCometError(f"unreadable frozen-prefix cache ({exc})", path=self.path) from exc
        if meta.get("format") != str(FORMAT_VERSION) or (key is not None and meta.get("key") != key):
            raise AfroCometError("frozen-prefix cache was written for other inputs (key mismatch)", path=self.path)

    def __len__(self) -> int:
        return len(self.lengths)

    def describe(self) -> dict:
        """What a stage result records: the file, the layers it stands in for, its storage dtype."""
        return {"path": str(self.path), "layers": self.layers, "dtype": self.dtype}

    def hidden(self, index: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The cached states of examples `index` [b] padded as `mask` [b, s]: [b, s, H] (zeros on
        padding, which the upper layers' mask keeps out of every real position)."""
        b, s = mask.shape
        out = torch.zeros(b, s, self.hidden_size, dtype=dtype)
        for row, i in enumerate(index.tolist()):
            out[row, :self.lengths[i]] = self._hidden[self.offsets[i]:self.offsets[i + 1]]
        return out.to(mask.device)

    @contextlib.contextmanager
    def feeding(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        """Context for one forward of `model` on `batch` (which has the rows' `index`): the model
        starts from the cached states and runs layers N.. and its head only."""
        dtype = next(model.parameters()).dtype
        with _swapped(model, slice(self.layers, None), self.hidden(batch["index"], batch["attention_mask"], dtype)):
            yield


def open_or_build(model: nn.Module, data: Encoded, pad_id: int, n: int, *, device: torch.device | str,
                  build: bool = True, batch_size: int = 64, dtype: torch.dtype = DTYPE) -> FrozenPrefix | None:
    """The cache for (frozen prefix of `model`, data): opened if present, else built when `build`
    (else None). A damaged or mismatching file is rebuilt."""
    from afrocomet.distill.cache import open_existing

    t0 = time.perf_counter()
    key = prefix_key(model, n, data, dtype)
    path = cache_dir() / f"{key}.safetensors"
    cache = open_existing(path, key, FrozenPrefix, data, name="frozen-prefix cache", build=build,
                          fallback="the layers run instead")
    if cache is not None or not build:
        return cache
    build_prefix_cache(path, model, n, data, pad_id, key, dtype=dtype, batch_size=batch_size, device=device)
    log.info("frozen-prefix cache: built %s (%d examples, embeddings + %d layers) in %.1fs", path, len(data), n,
             time.perf_counter() - t0)
    return FrozenPrefix(path, key)
