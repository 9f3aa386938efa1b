"""Teacher-output cache for task distillation (stage 2): run the frozen teacher once per example.

In stage 2 the teacher sees the same training tweets every epoch, for every student variant and
seed. In eval mode (no dropout) its outputs are a pure function of the example, so they are
computed once and read back:

- `logits`: class logits, fp16 [n, C];
- `attention`: head-mean (pooled) maps of the cached teacher layers, restricted to the example's
  real length: example i holds fp16 [P, l_i, l_i] (P layers, in `layers` order), all examples in
  one flat buffer; `attention_offsets` [n + 1] (int64) say where each starts;
- `lengths` [n] (int64) the real lengths.

One safetensors file, `<cache root>/teacher-outputs/<key>.safetensors`, read memory-mapped
(`safetensors.safe_open`; only the rows a batch needs are read), written atomically. The key is a
content hash of the teacher weights (and the config fields that change its outputs), the token ids
of the training examples, the tokenizer (its full serialised form), the layer list, the matching
mode, the longest example and `FORMAT_VERSION`: a changed teacher, data or tokenizer gives a new
file. The truncation limit (`data.max_length`) acts through the token ids.

The cache stands in for the teacher only where it holds everything the loss reads, to fp16
precision (not bit-exact: tests/test_cache.py bounds the difference): a `distill-task` stage with
`matching: mean` (pooled maps), or with no attention term. Projection matching needs per-head
maps and relations need Q/K/V; those, and masked-LM stages (new masks each epoch), run the teacher.
A stage that reads less than one epoch of examples does not build a cache (building costs a full
pass of the teacher over the data) but uses one that is already there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from afrocomet.data.batching import Encoded, collate
from afrocomet.errors import AfroCometError

log = logging.getLogger("afrocomet")

FORMAT_VERSION = 1
# config fields that change a teacher's outputs for the same weights
_CONFIG_FIELDS = ("model_type", "num_attention_heads", "hidden_act", "layer_norm_eps", "position_embedding_type",
                  "pad_token_id", "num_labels", "problem_type")


def cache_dir() -> Path:
    """`<cache root>/teacher-outputs` (the root as for AfriSenti: $AFROCOMET_CACHE, XDG, ~/.cache)."""
    from afrocomet.data.download import cache_root

    return cache_root() / "teacher-outputs"


# ----------------------------------------------------------------------------- when and what


def cached_layers(cfg, student_config, teacher_config) -> list[int] | None:
    """Teacher layers whose pooled maps a cache for stage `cfg` holds, or None when no cache can
    stand in for the teacher (not distill-task, cache off, no teacher term, or a matching mode
    other than `mean` with an attention term).

    With `mean` matching the maps are cached even when the attention weight is 0, so a KD-only
    variant and the hybrid one of the same run share one file.
    """
    from afrocomet.distill.matching import build_matcher

    if cfg.kind != "distill-task" or not cfg.teacher_cache or not cfg.reads_teacher:
        return None
    if cfg.matching != "mean":  # documented at StageConfig.teacher_cache: the teacher runs live
        return None if cfg.attention_weight > 0 else []
    try:
        return build_matcher("mean", student_config, teacher_config, cfg.layer_map).teacher_layers
    except AfroCometError as exc:
        if cfg.attention_weight > 0:
            raise
        _say_once(f"stage '{cfg.name}': its layer map does not fit these models ({exc}); it is not used (the "
                  "stage has no attention term), and the teacher cache holds the class logits only")
        return []


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    """One warning line per distinct message in this process (a stage runs once per student and seed)."""
    if message not in _SAID:
        _SAID.add(message)
        log.warning(message)


def hash_tensor(h, name: str, t: torch.Tensor) -> None:
    """Feed tensor `t` (its name, dtype, shape and bytes) to the hash `h` (also distill/frozen_prefix.py)."""
    t = t.detach().to("cpu").contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def teacher_fingerprint(teacher: nn.Module) -> str:
    """sha256 of the teacher's weights (every tensor of its state dict) and output-relevant config."""
    h = hashlib.sha256()
    config = {k: getattr(teacher.config, k, None) for k in _CONFIG_FIELDS}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        hash_tensor(h, name, tensor)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer: its full serialised form (vocab, normaliser, ...) and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    specials = json.dumps(sorted(map(str, getattr(tokenizer, "all_special_tokens", []))))
    return hashlib.sha256((text + specials + type(tokenizer).__name__).encode()).hexdigest()


def data_fingerprint(data: Encoded) -> str:
    """sha256 of the token ids of every example, in order."""
    lengths = np.array([len(ids) for ids in data.ids], dtype=np.int64)
    flat = np.fromiter((t for ids in data.ids for t in ids), dtype=np.int64, count=int(lengths.sum()))
    return hashlib.sha256(lengths.tobytes() + flat.tobytes()).hexdigest()


def cache_key(teacher: nn.Module, data: Encoded, tokenizer, layers: list[int], matching: str = "mean") -> str:
    """The content hash naming a cache file (see the module docstring for what goes in)."""
    parts = {
        "format": FORMAT_VERSION, "teacher": teacher_fingerprint(teacher), "data": data_fingerprint(data),
        "tokenizer": tokenizer_fingerprint(tokenizer), "layers": [int(x) for x in layers],
        "matching": matching if layers else "none", "max_length": max((len(i) for i in data.ids), default=0),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------- build


def _teacher_pass(teacher: nn.Module, data: Encoded, pad_id: int, layers: list[int], batch_size: int,
                  device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits [n, C] and each example's maps [P, l, l] (fp16, CPU), in data order; length-sorted batches."""
    from afrocomet.device import autocast_for
    from afrocomet.models.attention import AttentionCapture

    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    logits: list[torch.Tensor | None] = [None] * len(data)
    maps: list[torch.Tensor] = [torch.empty(0, dtype=torch.float16)] * len(data)
    capture = AttentionCapture(teacher, layers, keep="pooled") if layers else contextlib.nullcontext()
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.inference_mode(), capture, autocast_for(device):
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                batch = collate(data, index, pad_id)
                out = teacher(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
                pooled = capture.pooled() if layers else {}  # {layer: [b, s, s]}
                for row, i in enumerate(index):
                    logits[i] = out.logits[row].to("cpu", torch.float16)  # [C]
                    if layers:
                        n = len(data.ids[i])
                        maps[i] = torch.stack([pooled[j][row, :n, :n] for j in layers]).to("cpu", torch.float16)
    finally:
        teacher.train(was_training)
    return torch.stack(logits), maps  # type: ignore[arg-type]


def build_cache(path: str | Path, teacher: nn.Module, data: Encoded, pad_id: int, layers: list[int], key: str,
                *, batch_size: int = 64, device: torch.device | str = "cpu") -> Path:
    """Run the teacher once over `data` and write its outputs to `path` (atomically)."""
    from safetensors.torch import save_file

    from afrocomet.io import atomic_path

    device = torch.device(device)
    logits, maps = _teacher_pass(teacher, data, pad_id, layers, batch_size, device)
    sizes = torch.tensor([0] + [m.numel() for m in maps], dtype=torch.int64)
    tensors = {
        "logits": logits.contiguous(),  # [n, C]
        "lengths": torch.tensor([len(ids) for ids in data.ids], dtype=torch.int64),  # [n]
        "attention": torch.cat([m.reshape(-1) for m in maps]) if layers else torch.zeros(0, dtype=torch.float16),
        "attention_offsets": torch.cumsum(sizes, 0),  # [n + 1]
    }
    metadata = {"format": str(FORMAT_VERSION), "key": key, "layers": json.dumps(layers), "examples": str(len(data))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


# ----------------------------------------------------------------------------- read


class CachedAttention:
    """Stands in for the teacher's `AttentionCapture` (keep="pooled") in the `mean` matcher."""

    keep = "pooled"

    def __init__(self, maps: dict[int, torch.Tensor], mask: torch.Tensor):
        self._maps, self.mask = maps, mask.bool()

    def pooled(self) -> dict[int, torch.Tensor]:
        return self._maps


class TeacherCache:
    """A cache file opened memory-mapped; `outputs(index, mask)` gives one batch's teacher outputs."""

    def __init__(self, path: str | Path, key: str | None = None):
        from safetensors import safe_open

        self.path = Path(path)
        try:
            self._file = safe_open(str(self.path), framework="pt")
            meta = self._file.metadata() or {}
            self.layers: list[int] = json.loads(meta["layers"])
            self.logits = self._file.get_tensor("logits")  # [n, C], small: read whole
            self.lengths = self._file.get_tensor("lengths").tolist()
            self.offsets = self._file.get_tensor("attention_offsets").tolist()
            self._attention = self._file.get_slice("attention")  # read per example, memory-mapped
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            raise AfroCometError(f"unreadable teacher cache ({exc})", path=self.path) from exc
        if meta.get("format") != str(FORMAT_VERSION) or (key is not None and meta.get("key") != key):
            raise AfroCometError("teacher cache was written for other inputs (key mismatch)", path=self.path)

    def __len__(self) -> int:
        return len(self.lengths)

    def outputs(self, index: torch.Tensor, mask: torch.Tensor, attention: bool = True) -> dict:
        """Teacher outputs for the batch of examples `index` [b] padded as `mask` [b, s]:
        {"logits": fp32 [b, C], "attention": CachedAttention ({layer: fp32 [b, s, s]}, zero on padding)};
        without `attention` (a stage with no attention term) the maps are not read."""
        rows = index.tolist()
        b, s = mask.shape
        out: dict = {"logits": self.logits[rows].to(mask.device, torch.float32)}
        if self.layers and attention:
            maps = torch.zeros(len(self.layers), b, s, s)  # [P, b, s, s]
            for row, i in enumerate(rows):
                n = self.lengths[i]
                maps[:, row, :n, :n] = self._attention[self.offsets[i]:self.offsets[i + 1]].view(-1, n, n)
            maps = maps.to(mask.device)
            out["attention"] = CachedAttention({j: maps[p] for p, j in enumerate(self.layers)}, mask)
        return out


def open_or_build(teacher: nn.Module, data: Encoded, tokenizer, layers: list[int], *, device: torch.device | str,
                  build: bool = True, batch_size: int = 64, matching: str = "mean") -> TeacherCache | None:
    """The cache for (teacher, data, tokenizer, layers): opened if present, else built when `build`
    (else None). A damaged or mismatching file is rebuilt."""
    t0 = time.perf_counter()
    key = cache_key(teacher, data, tokenizer, layers, matching)
    path = cache_dir() / f"{key}.safetensors"
    cache = open_existing(path, key, TeacherCache, data, name="teacher cache", build=build,
                          fallback="the teacher runs instead")
    if cache is not None or not build:
        return cache
    build_cache(path, teacher, data, tokenizer.pad_token_id, layers, key, batch_size=batch_size, device=device)
    log.info("teacher cache: built %s (%d examples, layers %s) in %.1fs", path, len(data), layers,
             time.perf_counter() - t0)
    return TeacherCache(path, key)


def open_existing(path: Path, key: str, open_file, data: Encoded, *, name: str, build: bool, fallback: str):
    """A cache file already at `path`, opened with `open_file(path, key)` when it holds `data`'s examples
    (the same lengths); else None: absent, or damaged or for other inputs (one warning line saying it
    is rebuilt when `build`, else that `fallback` happens). Both caches (this one and
    distill/frozen_prefix.py) open their files through it."""
    if not path.is_file():
        return None
    try:
        cache = open_file(path, key)
        if cache.lengths == [len(ids) for ids in data.ids]:
            log.info("%s: reusing %s", name, path)
            return cache
        log.warning("%s: %s holds %d examples whose lengths differ from these %d; %s", name, path, len(cache),
                    len(data), "rebuilding it" if build else f"not using it ({fallback})")
    except AfroCometError as exc:
        log.warning("%s: %s; %s", name, exc, "rebuilding it" if build else f"not using it ({fallback})")
    return None
