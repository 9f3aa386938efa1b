"""Dev scores that the training loop calls between steps: weighted F1 for task stages, minus the
masked-LM loss for stage 1; and the class logits of already-encoded texts they rest on."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from afrocomet.data.batching import Encoded, MLMMasker, collate


def predict_encoded(model: nn.Module, data: Encoded, pad_id: int, device, batch_size: int = 128) -> np.ndarray:
    """Class logits for already-encoded texts (length-sorted batches, original order)."""
    from afrocomet.inference import predict_ids

    return predict_ids(model, data.ids, pad_id, batch_size=batch_size, device=device)


def _logits(model: nn.Module, dev: dict[str, Encoded], pad_id: int, device) -> dict[str, np.ndarray]:
    return {lang: predict_encoded(model, data, pad_id, device) for lang, data in dev.items()}


_LATEST: dict = {}  # the latest dev_logits: {"key": (weights' hash, the dev sets' hash, pad id), "logits": ...}


def dev_logits(model: nn.Module, dev: dict[str, Encoded], pad_id: int, device) -> dict[str, np.ndarray]:
    """Each language's dev logits (do not modify them). The latest are kept, keyed by a hash of the
    weights and of the dev token ids: the fine-tuned teacher's last dev evaluation is its best when it
    was still improving (the default's), and what reads its dev logits next (the majority check, the
    combined teacher's w) then reads those rather than another pass (~17 s on 2 cores)."""
    from afrocomet.distill.cache import data_fingerprint, teacher_fingerprint

    key = (teacher_fingerprint(model), tuple((lang, data_fingerprint(data)) for lang, data in dev.items()), pad_id)
    if _LATEST.get("key") != key:
        _LATEST.clear()  # the old logits go before the new are computed
        _LATEST.update(key=key, logits=_logits(model, dev, pad_id, device))
    return _LATEST["logits"]


def dev_f1(dev: dict[str, Encoded], pad_id: int, device, keep: bool = False) -> Callable[[nn.Module], float]:
    """Dev score for task stages: weighted F1 averaged over languages. `keep` (the teacher's fine-tuning):
    through `dev_logits`, whose weight hash costs ~0.25 s per 276 MB of weights on a CPU, far less than
    the dev pass it saves once; the students' many evaluations skip it."""
    from sklearn.metrics import f1_score

    def score(model: nn.Module) -> float:
        logits = (dev_logits if keep else _logits)(model, dev, pad_id, device)
        return float(np.mean([f1_score(data.labels, logits[lang].argmax(-1), average="weighted")
                              for lang, data in dev.items()]))

    return score


def dev_mlm(dev: dict[str, Encoded], tokenizer, device, limit: int = 512, seed: int = 1234) -> Callable[[nn.Module], float]:
    """Dev score for masked-LM stages: minus the MLM loss on a fixed, fixed-mask dev sample."""
    from afrocomet.distill.objective import model_outputs

    data = Encoded.concat(list(dev.values()))
    index = np.random.default_rng(seed).permutation(len(data))[:limit]
    masker = MLMMasker(tokenizer, 0.15, seed=seed)
    batches = [masker(collate(data, index[i:i + 64].tolist(), tokenizer.pad_token_id)) for i in range(0, len(index), 64)]

    def score(model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model_outputs(model, batch, "mlm")
                if out["labels"].numel():
                    total += float(torch.nn.functional.cross_entropy(out["logits"].float(), out["labels"], reduction="sum"))
                    count += out["labels"].numel()
        model.train(was_training)
        return -total / max(count, 1)

    return score
