"""Running a classifier over many inputs: the one loop for batching, padding, device and precision.

Every path that predicts goes through `batch_logits` (one batch: inputs moved to the device, the
forward under `torch.inference_mode()`, float32 logits back on the host as numpy):

- `predict_logits`: raw texts, run longest first (by token count) in batches padded to the
  batch's longest text and truncated at `max_length`, logits put back in input order. Used by
  evaluation, `afrocomet predict` / `evaluate` (PyTorch and ONNX folders) and export's parity check.
- `predict_ids`: texts already encoded as token ids (the run's dev and test sets), run shortest
  first in batches of `collate`'s padding (pad id, attention mask), logits back in input order.
- `text_predictor`: one call is one batch, exactly as given (bench times what it is handed).

Precision: fp32 unless `autocast=True`, which runs under `afrocomet.device.autocast_for` (bf16 on
CUDA, fp32 on the CPU). Every caller in afrocomet predicts in fp32, so that a model's scores do
not depend on the device it is evaluated on.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from afrocomet.data.batching import pad_ids
from afrocomet.device import autocast_for, resolve_device
from afrocomet.errors import AfroCometError

Batch = dict[str, torch.Tensor]
Forward = Callable[..., Any]  # model(**batch) -> output with .logits [B, num_labels]


def as_device(device: str | torch.device) -> torch.device:
    """A torch.device: given as is, or resolved from its name (`auto`, `cpu`, `cuda`, `cuda:N`)."""
    return device if isinstance(device, torch.device) else resolve_device(device)


def _precision(device: torch.device, autocast: bool):
    return autocast_for(device) if autocast else contextlib.nullcontext()


def batch_logits(forward: Forward, batch: Mapping[str, torch.Tensor], device: torch.device, *,
                 autocast: bool = False) -> np.ndarray:
    """Logits [B, num_labels] as float32 numpy of one batch (moving them to the host waits for the device)."""
    with torch.inference_mode(), _precision(device, autocast):
        inputs = {k: v.to(device) for k, v in batch.items()}
        return forward(**inputs).logits.float().cpu().numpy()


@contextlib.contextmanager
def evaluating(model: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """`model` on `device` in eval mode; its train/eval mode is restored afterwards.

    A model already there (its first parameter) and in eval mode (its own flag: `eval()` sets every
    submodule's) is left as it is: moving and re-moding every module cost a third of a small
    student's time on one tweet (1.56 -> 1.08 ms p50 on one thread), and `predict`, `bench` and
    `serve` come here once a batch."""
    first = next(model.parameters(), None)
    if first is None or first.device != device:
        model.to(device)
    if not model.training:
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        model.train()


def run_in_order(model: torch.nn.Module, order: Sequence[int], batch_size: int,
                 make_batch: Callable[[list[int]], Batch], device: torch.device, *, autocast: bool = False) -> np.ndarray:
    """Logits of every example, batches of `batch_size` taken in `order`, returned in input order.

    `order` is a permutation of range(n); `make_batch(indices)` builds the padded CPU tensors.
    """
    chunks = []
    with evaluating(model, device):
        for start in range(0, len(order), batch_size):
            chunks.append(batch_logits(model, make_batch(list(order[start:start + batch_size])), device,
                                       autocast=autocast))  # [B, num_labels]
    sorted_logits = np.concatenate(chunks)  # rows in `order`
    logits = np.empty_like(sorted_logits)
    logits[np.asarray(order)] = sorted_logits
    return logits


def _num_labels(model: torch.nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)


# ---------------------------------------------------------------------------------------------
# Raw texts
# ---------------------------------------------------------------------------------------------


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> Batch:
    """Tokenize with truncation and dynamic padding (to the longest text in this batch); CPU tensors."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def predict_logits(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device = "cpu",
    autocast: bool = False,
) -> tuple[np.ndarray, int]:
    """Class logits [len(texts), num_labels] as float32 numpy, and how many texts were truncated.

    Texts are run longest first in batches padded to the batch's longest text, then put back in
    their original order. The model runs in eval mode under `torch.inference_mode()`; its
    train/eval mode is restored afterwards.
    """
    if batch_size < 1 or max_length < 2:
        raise AfroCometError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
    texts = list(texts)
    if not texts:
        return np.zeros((0, _num_labels(model)), dtype=np.float32), 0
    enc, lengths = token_ids(tokenizer, texts, max_length)
    n_truncated = sum(n > max_length for n in lengths)
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    return run_in_order(model, order, batch_size, lambda index: pad_encoded(tokenizer, enc, index),
                        as_device(device), autocast=autocast), n_truncated


def token_ids(tokenizer, texts: Sequence[str], max_length: int) -> tuple[Mapping[str, list], list[int]]:
    """One tokenizer pass over `texts`: their ids truncated at `max_length` (with token_type_ids where
    the tokenizer makes them), and each text's full length, special tokens included (the texts that
    reach `max_length` are tokenized again, untruncated, to tell). A second pass over every text cost
    the server a fifth of its model thread."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in enc["input_ids"]]
    at_limit = [i for i, n in enumerate(lengths) if n >= max_length]
    if at_limit:
        whole = tokenizer([texts[i] for i in at_limit], add_special_tokens=True, truncation=False)["input_ids"]
        for i, ids in zip(at_limit, whole):
            lengths[i] = len(ids)
    return enc, lengths


def pad_encoded(tokenizer, enc: Mapping[str, list], index: Sequence[int]) -> Batch:
    """The rows `index` of `token_ids`' encoding as one batch padded to its longest text, as the
    tokenizer would pad them (afrocomet's numpy padding where the tokenizer pads on the right)."""
    types = enc.get("token_type_ids")
    if tokenizer.padding_side == "right" and tokenizer.pad_token_id is not None:
        return pad_ids([enc["input_ids"][i] for i in index], tokenizer.pad_token_id,
                       type_ids=None if types is None else [types[i] for i in index])
    rows = {k: [enc[k][i] for i in index] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    padded = tokenizer.pad(rows, padding=True, return_tensors="pt")
    return {k: padded[k] for k in rows}


def text_predictor(model: torch.nn.Module, tokenizer, *, max_length: int = 128, device: str | torch.device = "cpu",
                   forward: Forward | None = None, autocast: bool = False) -> Callable[[Sequence[str]], np.ndarray]:
    """`predict(texts) -> logits [len(texts), num_labels]`: one call runs the texts as one batch, in order.

    The model is moved to `device` and put in eval mode once, here (it stays so); `forward`
    (default: the model itself) runs each batch, e.g. a compiled model.
    """
    dev = as_device(device)
    model.to(dev).eval()
    run = model if forward is None else forward

    def predict(texts: Sequence[str]) -> np.ndarray:
        return batch_logits(run, encode_texts(tokenizer, texts, max_length), dev, autocast=autocast)

    return predict


# ---------------------------------------------------------------------------------------------
# Already-encoded texts
# ---------------------------------------------------------------------------------------------


def predict_ids(model: torch.nn.Module, ids: Sequence[Sequence[int]], pad_id: int, *, batch_size: int = 128,
                device: str | torch.device = "cpu", autocast: bool = False) -> np.ndarray:
    """Class logits [len(ids), num_labels] (float32 numpy) of texts given as token ids, in input order.

    Texts run shortest first (stable) in batches padded with `pad_id` to the batch's longest text.
    """
    if batch_size < 1:
        raise AfroCometError(f"batch_size must be >= 1, got {batch_size}")
    if len(ids) == 0:
        return np.zeros((0, _num_labels(model)), dtype=np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    return run_in_order(model, order, batch_size, lambda index: pad_ids([ids[i] for i in index], pad_id),
                        as_device(device), autocast=autocast)

