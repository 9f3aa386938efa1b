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


def dev_logits(model: nn.Module, dev: dict[str, Encoded], pad_id: int, device) -> dict[str, np.ndarray]:
    """Each language's dev logits, in one pass: for what reads them after the teacher's fine-tuning (the
    majority check, the combined teacher's w), at ~17 s a pass of the default teacher on 2 cores."""
    return {lang: predict_encoded(model, data, pad_id, device) for lang, data in dev.items()}


def dev_f1(dev: dict[str, Encoded], pad_id: int, device) -> Callable[[nn.Module], float]:
    """Dev score for task stages: weighted F1 averaged over languages."""
    from sklearn.metrics import f1_score

    def score(model: nn.Module) -> float:
        values = []
        for data in dev.values():
            pred = predict_encoded(model, data, pad_id, device).argmax(-1)
            values.append(f1_score(data.labels, pred, average="weighted"))
        return float(np.mean(values))

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
