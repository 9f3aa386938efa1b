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


def run_in_order(model: torch.nn.Module, batches: Sequence[Sequence[int]], make_batch: Callable[[list[int]], Batch],
                 device: torch.device, *, autocast: bool = False) -> np.ndarray:
    """Logits of every example, batch by batch, returned in input order.

    `batches` partitions range(n) (each a list of indices, run in this order); `make_batch(indices)`
    builds the padded CPU tensors.
    """
    chunks = []
    with evaluating(model, device):
        for index in batches:
            chunks.append(batch_logits(model, make_batch(list(index)), device, autocast=autocast))  # [B, labels]
    order = np.concatenate([np.asarray(index, dtype=np.int64) for index in batches])
    stacked = np.concatenate(chunks)  # rows in `order`
    logits = np.empty_like(stacked)
    logits[order] = stacked
    return logits


def in_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """`order` in consecutive batches of `batch_size` (the last may be shorter)."""
    return [list(order[start:start + batch_size]) for start in range(0, len(order), batch_size)]


def length_batches(order: Sequence[int], lengths: Sequence[int], batch_size: int, split_cost: float) -> list[list[int]]:
    """`order` (longest first) cut into batches of at most `batch_size` that cost the least in all, a
    batch costing `split_cost` (a forward's fixed cost, in token slots) + its rows x its longest text.

    A batch of 16 tweets padded to its longest is 57% padding; on one CPU thread the demo teacher runs
    such a batch 1.6x faster cut this way (`split_cost` 64-128), which micro-batching needs. Exact
    (dynamic programming over the cut points), O(len(order) x batch_size)."""
    n, widths = len(order), [lengths[i] for i in order]
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - batch_size), end):
            cost = best[start] + split_cost + (end - start) * widths[start]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    bounds, end = [], n
    while end > 0:
        bounds.append((cut[end], end))
        end = cut[end]
    return [list(order[a:b]) for a, b in reversed(bounds)]


def measure_split_cost(model: torch.nn.Module, device: torch.device, *, short: int = 8, rows: int = 4,
                       width: int = 32, repeats: int = 5, budget_s: float = 0.5) -> float:
    """A forward's fixed cost on this machine, in token slots: the batch-1 time of a `short` input over
    the time a slot adds (from a `rows` x `width` batch), fastest of up to `repeats` timings each (fewer
    once a shape has taken `budget_s`: AfroXLMR-Large on one CPU thread would take 22 s at 8 x 64 and
    five timings). `width` must fit the model's position table."""
    import time

    short = min(short, width - 1)

    def fastest(b: int, s: int) -> float:
        batch = {"input_ids": torch.full((b, s), 5, dtype=torch.long),
                 "attention_mask": torch.ones((b, s), dtype=torch.long)}
        times, began = [], time.perf_counter()
        with evaluating(model, device):
            for k in range(repeats + 1):  # the first warms up
                start = time.perf_counter()
                batch_logits(model, batch, device)
                times.append(time.perf_counter() - start)
                if k >= 1 and time.perf_counter() - began > budget_s:
                    break
        return min(times[1:])

    one, many = fastest(1, short), fastest(rows, width)
    per_slot = max((many - one) / (rows * width - short), 1e-9)
    return max(0.0, one / per_slot - short)


def _num_labels(model: torch.nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)


# ---------------------------------------------------------------------------------------------
# Raw texts
# ---------------------------------------------------------------------------------------------


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> Batch:
    """Tokenize with truncation and dynamic padding (to the longest text in this batch); CPU tensors,
    padded as `predict_logits` pads (`pad_encoded`)."""
    return pad_encoded(tokenizer, tokenizer(list(texts), truncation=True, max_length=max_length), range(len(texts)))


def predict_logits(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device = "cpu",
    autocast: bool = False,
    split_cost: float | None = None,
) -> tuple[np.ndarray, int]:
    """Class logits [len(texts), num_labels] as float32 numpy, and how many texts were truncated.

    Texts are run longest first in batches padded to the batch's longest text, then put back in
    their original order: batches of `batch_size`, or, with `split_cost` (`measure_split_cost`), cut
    where padding would cost more than another forward (`length_batches`; the server's micro-batches).
    The model runs in eval mode under `torch.inference_mode()`; its train/eval mode is restored afterwards.
    """
    if batch_size < 1 or max_length < 2:
        raise AfroCometError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
    texts = list(texts)
    if not texts:
        return np.zeros((0, _num_labels(model)), dtype=np.float32), 0
    enc, lengths = token_ids(tokenizer, texts, max_length)
    n_truncated = sum(n > max_length for n in lengths)
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    batches = in_batches(order, batch_size) if split_cost is None else \
        length_batches(order, [min(n, max_length) for n in lengths], batch_size, split_cost)
    return run_in_order(model, batches, lambda index: pad_encoded(tokenizer, enc, index),
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
    return run_in_order(model, in_batches(order, batch_size), lambda index: pad_ids([ids[i] for i in index], pad_id),
                        as_device(device), autocast=autocast)

