"""afrocomet.inference: the one prediction loop keeps each path's batches, padding, order and dtype."""

from __future__ import annotations

import copy
import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from afrocomet.data.batching import collate, encode  # noqa: E402
from afrocomet.errors import AfroCometError  # noqa: E402
from afrocomet.inference import predict_ids, predict_logits, text_predictor  # noqa: E402

from helpers import WORDS, tiny_model, tiny_tokenizer  # noqa: E402


class Recorder(torch.nn.Module):
    """Wraps a model and records the input_ids of every batch it sees."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.seen = model, model.config, []

    def forward(self, **batch):
        self.seen.append(batch["input_ids"].clone())
        return self.model(**batch)


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    rng = random.Random(5)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) for _ in range(23)]
    torch.manual_seed(0)
    return tokenizer, texts, tiny_model(len(tokenizer))


def test_predict_ids_is_the_runs_loop(setup):
    """Shortest first, batches of `collate`'s padding, input order back: exactly what the run computed."""
    tokenizer, texts, model = setup
    data = encode(tokenizer, texts, 12)
    pad = tokenizer.pad_token_id
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    expected = np.zeros((len(data), 3), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), 5):
            index = order[start:start + 5]
            batch = collate(data, index, pad)
            expected[index] = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()

    recorder = Recorder(model).train()
    got = predict_ids(recorder, data.ids, pad, batch_size=5, device="cpu")
    assert recorder.training and got.dtype == np.float32
    assert np.array_equal(got, expected)  # same batches, same padding: bit for bit
    assert [b.shape[0] for b in recorder.seen] == [5, 5, 5, 5, 3]
    assert torch.equal(recorder.seen[0], collate(data, order[:5], pad)["input_ids"])
    assert predict_ids(model, [], pad).shape == (0, 3)
    with pytest.raises(AfroCometError):
        predict_ids(model, data.ids, pad, batch_size=0)


def test_predict_logits_longest_first_and_text_predictor_as_given(setup):
    tokenizer, texts, model = setup
    recorder = Recorder(model)
    logits, n_truncated = predict_logits(recorder, tokenizer, texts, batch_size=4, max_length=10)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    assert n_truncated == sum(n > 10 for n in lengths)
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    first = tokenizer([texts[i] for i in order[:4]], truncation=True, max_length=10, padding=True,
                      return_tensors="pt")["input_ids"]
    assert torch.equal(recorder.seen[0], first)  # the four longest texts, padded to the longest of them
    assert len(recorder.seen) == 6

    recorder.seen.clear()
    predict = text_predictor(recorder, tokenizer, max_length=10)
    batch = [texts[i] for i in order[:4]]
    assert np.array_equal(predict(batch), logits[order[:4]])  # the same batch gives the same logits
    assert len(recorder.seen) == 1 and torch.equal(recorder.seen[0], first)
    with_autocast = predict_logits(model, tokenizer, texts, batch_size=4, max_length=10, autocast=True)[0]
    assert np.array_equal(with_autocast, logits)  # autocast is fp32 on the CPU


def test_a_model_already_in_place_is_not_moved_or_re_moded_at_each_batch(setup, monkeypatch):
    """`evaluating` runs once a batch (predict, bench, serve): a model on its device in eval mode is used
    as it is (moving and re-moding every module was a third of a small student's batch-1 time); one in
    training mode is put in eval mode and given back in training mode; one elsewhere is moved."""
    from afrocomet.inference import evaluating

    tokenizer, texts, model = setup
    calls = []
    monkeypatch.setattr(type(model), "to", lambda self, *a, **k: calls.append("to") or self, raising=False)
    monkeypatch.setattr(type(model), "train", lambda self, mode=True: calls.append(f"train {mode}") or
                        torch.nn.Module.train(self, mode))
    model.eval()
    calls.clear()
    for _ in range(3):
        with evaluating(model, torch.device("cpu")) as m:
            assert m is model and not m.training
    assert calls == []
    model.train()
    calls.clear()
    with evaluating(model, torch.device("cpu")):
        assert not model.training and all(not sub.training for sub in model.modules())
    assert model.training and calls == ["train False", "train True"]
    with evaluating(model, torch.device("meta")):
        pass
    assert calls[-3] == "to"


def _two_pass_logits(model, tokenizer, texts, batch_size, max_length):
    """predict_logits as it was: every text tokenized untruncated for its length, then each batch
    tokenized again by the tokenizer itself (truncated, padded)."""
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    logits, batches = np.zeros((len(texts), 3), dtype=np.float32), []
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in index], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")  # the tokenizer's own padding
            batches.append({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc})
            logits[index] = model(**batches[-1]).logits.numpy()
    return logits, sum(n > max_length for n in lengths), batches


@pytest.mark.parametrize("kind", ["types", "no types", "left padding"])
def test_one_tokenizer_pass_gives_the_batches_and_logits_of_two(setup, kind):
    """predict_logits tokenizes once (texts that reach max_length again, to count truncation) and pads
    in numpy: the same batches (every tensor), logits bit for bit and truncation count as tokenizing
    each batch with the tokenizer, for texts over, at and under max_length."""
    tokenizer, texts, model = setup
    tokenizer, model = copy.deepcopy(tokenizer), model.eval()
    if kind == "types":  # as BERT's tokenizers make them
        tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    if kind == "left padding":
        tokenizer.padding_side = "left"
    texts = texts + [" ".join(WORDS[:8]), " ".join(WORDS[:9]), " ".join(WORDS * 2)]  # 10, 11 and 36 tokens
    recorder = Recorder(model).eval()  # it hands the model back in eval mode for the two-pass run
    recorder.forward = lambda **batch: recorder.seen.append(batch) or model(**batch)
    got, n_truncated = predict_logits(recorder, tokenizer, texts, batch_size=4, max_length=10)
    want, want_truncated, batches = _two_pass_logits(model, tokenizer, texts, 4, 10)
    assert n_truncated == want_truncated == sum(len(t.split()) + 2 > 10 for t in texts) > 0
    assert np.array_equal(got, want)
    assert [sorted(b) for b in recorder.seen] == [sorted(b) for b in batches]
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for a, b in zip(recorder.seen, batches) for k in b)
    assert ("token_type_ids" in batches[0]) == (kind == "types")


def _cost(batches, lengths, split_cost):
    return sum(split_cost + len(b) * max(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("split_cost", [0, 3, 20, 1e9])
def test_length_batches_is_the_cheapest_cut_of_the_longest_first_order(split_cost):
    """Every way of cutting the order into runs of at most batch_size, tried: none costs less; the batches
    keep the order; a huge fixed cost gives the fewest batches, none at all gives no padding."""
    import itertools

    from afrocomet.inference import length_batches

    rng = random.Random(7)
    for n in range(1, 10):
        lengths = [rng.randint(1, 40) for _ in range(n)]
        order = sorted(range(n), key=lambda i: -lengths[i])
        got = length_batches(order, lengths, 4, split_cost)
        assert [i for b in got for i in b] == order and all(1 <= len(b) <= 4 for b in got)
        best = min(_cost([order[a:b] for a, b in zip((0,) + cuts, cuts + (n,))], lengths, split_cost)
                   for k in range(n) for cuts in itertools.combinations(range(1, n), k)
                   if all(b - a <= 4 for a, b in zip((0,) + cuts, cuts + (n,))))
        assert _cost(got, lengths, split_cost) == best
        if split_cost == 1e9:
            assert len(got) == -(-n // 4)
        if split_cost == 0:
            assert all(len({lengths[i] for i in b}) == 1 for b in got)


def test_split_batches_give_the_same_labels_and_run_the_cut(setup):
    """predict_logits with a split cost runs length_batches' batches; logits agree with one padded batch
    to float rounding, labels exactly; the measured cost is a finite number of token slots."""
    from afrocomet.inference import length_batches, measure_split_cost

    tokenizer, texts, model = setup
    model.eval()
    recorder = Recorder(model).eval()
    whole, _ = predict_logits(model, tokenizer, texts, batch_size=32, max_length=12)
    split, _ = predict_logits(recorder, tokenizer, texts, batch_size=32, max_length=12, split_cost=4)
    lengths = [min(len(ids), 12) for ids in tokenizer(texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    cut = length_batches(order, lengths, 32, 4)
    assert len(cut) > 1 and [b.shape for b in recorder.seen] == [(len(b), lengths[b[0]]) for b in cut]
    assert np.allclose(split, whole, atol=1e-5) and (split.argmax(1) == whole.argmax(1)).all()
    cost = measure_split_cost(model, torch.device("cpu"), width=12, repeats=2)
    assert 0 <= cost < float("inf")


def test_measuring_the_split_cost_stops_repeating_once_over_its_time_budget(setup):
    """Up to `repeats` timings a shape after one warm-up; with the budget spent, one timing a shape (a
    large model on a CPU would otherwise spend tens of seconds here at start-up)."""
    from afrocomet.inference import measure_split_cost

    _, _, model = setup
    recorder = Recorder(model.eval()).eval()
    measure_split_cost(recorder, torch.device("cpu"), width=12, repeats=3, budget_s=60)
    assert [tuple(b.shape) for b in recorder.seen] == [(1, 8)] * 4 + [(4, 12)] * 4
    recorder.seen.clear()
    measure_split_cost(recorder, torch.device("cpu"), width=12, repeats=3, budget_s=0)
    assert [tuple(b.shape) for b in recorder.seen] == [(1, 8)] * 2 + [(4, 12)] * 2
