"""Token ids in, padded batches out: encoding, language-balanced sampling, length buckets, MLM masking.

Order of an epoch is a pure function of (seed, epoch), so an evaluation or any other consumer of
the global RNG never changes which batches training sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from afrocomet.errors import AfroCometError


@dataclass
class Encoded:
    """Tokenised texts of one split: ids per text (with <s> ... </s>), optional labels and groups."""

    ids: list[list[int]]
    labels: list[int] | None = None
    groups: list[str] = field(default_factory=list)  # language of each text (for balanced sampling)
    truncated: int = 0  # texts cut at max_length
    # soft labels [n, C] float32 of a second teacher (the char n-gram model's out-of-fold class
    # probabilities, run/ngram_teacher.py); collated as `teacher_probs`
    soft: np.ndarray | None = None
    # the transformer's weight w in that mixture, per text [n] float32 (its language's, chosen on dev);
    # collated as `teacher_weight` [b, 1]
    soft_weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int]) -> "Encoded":
        rows = np.asarray(index, dtype=np.int64)
        return Encoded(
            ids=[self.ids[i] for i in index],
            labels=None if self.labels is None else [self.labels[i] for i in index],
            groups=[self.groups[i] for i in index] if self.groups else [],
            truncated=self.truncated,
            soft=None if self.soft is None else self.soft[rows],
            soft_weight=None if self.soft_weight is None else self.soft_weight[rows],
        )

    @staticmethod
    def concat(parts: Sequence["Encoded"]) -> "Encoded":
        has_labels = all(p.labels is not None for p in parts)
        has_soft = bool(parts) and all(p.soft is not None for p in parts)
        has_weight = bool(parts) and all(p.soft_weight is not None for p in parts)
        return Encoded(
            ids=[i for p in parts for i in p.ids],
            labels=[y for p in parts for y in p.labels] if has_labels else None,  # type: ignore[union-attr]
            groups=[g for p in parts for g in p.groups],
            truncated=sum(p.truncated for p in parts),
            soft=np.concatenate([p.soft for p in parts]) if has_soft else None,
            soft_weight=np.concatenate([p.soft_weight for p in parts]) if has_weight else None,
        )


def encode(tokenizer, texts: Sequence[str], max_length: int, *, labels: Sequence[int] | None = None,
           group: str | None = None) -> Encoded:
    """Tokenise with <s> ... </s>; texts longer than `max_length` keep their head and the </s>."""
    if max_length < 3:
        raise AfroCometError(f"max_length must be >= 3, got {max_length}")
    raw = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids, truncated = [], 0
    for seq in raw:
        if len(seq) > max_length:
            seq = seq[: max_length - 1] + [eos]
            truncated += 1
        ids.append(seq)
    return Encoded(ids=ids, labels=None if labels is None else list(labels),
                   groups=[group] * len(ids) if group else [], truncated=truncated)


def sampling_probabilities(sizes: dict[str, int], alpha: float) -> dict[str, float]:
    """XLM-R style language sampling: p_l ∝ n_l^alpha (alpha=1 proportional, 0 uniform)."""
    weights = {k: float(n) ** alpha for k, n in sizes.items() if n > 0}
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def epoch_order(data: Encoded, batch_size: int, seed: int, epoch: int, *, alpha: float | None = None,
                bucket: int = 50, shuffle: bool = True) -> list[list[int]]:
    """Batches of example indices for one epoch.

    With `alpha` and groups, the epoch has as many examples as the data, drawn per language with
    p ∝ n^alpha (small languages are repeated, large ones subsampled). Examples are sorted by length
    inside chunks of `bucket` batches (less padding), then the batches are shuffled.
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(data)
    if not shuffle:
        index = np.arange(n)
    elif alpha is not None and data.groups and len(set(data.groups)) > 1:
        groups = np.array(data.groups)
        names = sorted(set(data.groups))
        sizes = {g: int((groups == g).sum()) for g in names}
        probs = sampling_probabilities(sizes, alpha)
        parts = []
        for g in names:
            members = np.flatnonzero(groups == g)
            k = int(round(n * probs[g]))
            parts.append(rng.choice(members, size=k, replace=k > len(members)))
        index = rng.permutation(np.concatenate(parts))
    else:
        index = rng.permutation(n)
    lengths = np.array([len(data.ids[i]) for i in index])
    batches: list[list[int]] = []
    chunk = batch_size * bucket
    for start in range(0, len(index), chunk):
        part = index[start:start + chunk]
        part = part[np.argsort(lengths[start:start + chunk], kind="stable")]
        batches.extend(part[i:i + batch_size].tolist() for i in range(0, len(part), batch_size))
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int, *,
            type_ids: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
    """input_ids [b, s] padded on the right with `pad_id` to the longest sequence, attention_mask [b, s]
    (1 = token), and token_type_ids [b, s] (padded with 0) when `type_ids` gives them. Built in numpy,
    one copy for the whole batch (a tensor a row cost 7x as much at 16 tweets)."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    mask = np.arange(int(lengths.max())) < lengths[:, None]
    total = int(lengths.sum())
    batch = {"input_ids": _flat_into(mask, seqs, pad_id, total),
             "attention_mask": torch.from_numpy(mask.astype(np.int64))}
    if type_ids is not None:
        batch["token_type_ids"] = _flat_into(mask, type_ids, 0, total)
    return batch


def _flat_into(mask: np.ndarray, seqs: Sequence[Sequence[int]], fill: int, total: int) -> torch.Tensor:
    out = np.full(mask.shape, fill, dtype=np.int64)
    out[mask] = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=total)
    return torch.from_numpy(out)


def collate(data: Encoded, index: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the chosen examples to the longest one: input_ids, attention_mask [b, s] (+ labels [b])."""
    batch = pad_ids([data.ids[i] for i in index], pad_id)
    if data.labels is not None:
        batch["labels"] = torch.tensor([data.labels[i] for i in index], dtype=torch.long)
    rows = np.asarray(index, dtype=np.int64)
    if data.soft is not None:
        batch["teacher_probs"] = torch.from_numpy(data.soft[rows]).float()  # [b, C]
    if data.soft_weight is not None:
        batch["teacher_weight"] = torch.from_numpy(data.soft_weight[rows]).float().unsqueeze(-1)  # [b, 1]
    return batch


class MLMMasker:
    """BERT masking (15% of real tokens; of those 80% <mask>, 10% random, 10% kept) via transformers'
    DataCollatorForLanguageModeling, with its own seeded generator."""

    def __init__(self, tokenizer, probability: float = 0.15, seed: int = 0):
        from transformers import DataCollatorForLanguageModeling

        if tokenizer.mask_token is None:
            raise AfroCometError("the tokenizer has no mask token: masked-LM stages need one")
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=probability, seed=seed)
        # transformers creates the seeded generator only in its __call__; we call torch_mask_tokens
        # directly, which would otherwise draw from (and advance) the global torch RNG
        self.collator.generator = torch.Generator().manual_seed(seed)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"].clone()
        special = torch.isin(ids, self.special_ids) | (batch["attention_mask"] == 0)
        masked, mlm_labels = self.collator.torch_mask_tokens(ids, special_tokens_mask=special)
        out = dict(batch)
        out["input_ids"], out["mlm_labels"] = masked, mlm_labels
        return out
