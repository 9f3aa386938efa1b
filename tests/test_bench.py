"""Tests for afrocomet.bench on tiny models: sizes, the predictor interface, memory, comparison."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from afrocomet.bench import (
    compare,
    latency,
    measure_latency,
    measure_throughput,
    model_size,
    peak_memory,
    throughput,
    torch_predictor,
    weights_bytes,
)
from afrocomet.errors import AfroCometError

from helpers import WORDS, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20))) for _ in range(24)]
    return tokenizer, texts


def test_model_size_of_module_and_folder(tmp_path, setup):
    tokenizer, _ = setup
    model = tiny_model(len(tokenizer))
    size = model_size(model)
    n = sum(p.numel() for p in model.parameters())
    assert size["parameters"] == n
    assert 4 * n <= size["disk_bytes"] < 4 * n + 64 * 1024  # fp32 tensors + safetensors header
    assert weights_bytes(model) >= 4 * n
    assert model_size(model.half())["disk_bytes"] < size["disk_bytes"] * 0.6

    model = tiny_model(len(tokenizer))
    model.save_pretrained(tmp_path / "saved")
    from_folder = model_size(tmp_path / "saved")
    assert from_folder["parameters"] == n
    assert from_folder["disk_bytes"] == (tmp_path / "saved" / "model.safetensors").stat().st_size
    torch.save(model.state_dict(), tmp_path / "weights.bin")
    assert model_size(tmp_path / "weights.bin")["parameters"] >= n
    (tmp_path / "empty").mkdir()
    with pytest.raises(AfroCometError, match="no weight file"):
        model_size(tmp_path / "empty")


def test_non_embedding_parameters_leave_out_every_embedding_table(setup):
    from afrocomet.bench import non_embedding_parameters

    tokenizer, _ = setup
    model = tiny_model(len(tokenizer))
    tables = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    assert tables > 0
    assert non_embedding_parameters(model) == sum(p.numel() for p in model.parameters()) - tables
    # a tied masked-LM decoder is the word embedding: not counted again
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    mlm = XLMRobertaForMaskedLM(XLMRobertaConfig(vocab_size=500, hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=64))
    assert mlm.lm_head.decoder.weight is mlm.roberta.embeddings.word_embeddings.weight
    emb = mlm.roberta.embeddings
    tables = sum(t.weight.numel() for t in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings))
    core = sum(p.numel() for p in mlm.parameters()) - tables  # parameters() yields the tied weight once
    assert non_embedding_parameters(mlm) == core


def test_latency_and_throughput_through_any_predictor(setup):
    _, texts = setup
    calls: list[list[str]] = []

    def fake_predict(batch: list[str]) -> np.ndarray:  # stands in for an ONNX session wrapper
        calls.append(batch)
        return np.zeros((len(batch), 3), dtype=np.float32)

    lat = measure_latency(fake_predict, texts[:5], batch_size=2, warmup=2, repeats=7)
    assert len(calls) == 2 + 7 and calls[2] == texts[:2] and calls[4] == texts[4:5] and calls[5] == texts[:2]
    assert lat["n"] == 7 and lat["batch_size"] == 2 and lat["threads"] == torch.get_num_threads()
    assert 0 <= lat["p50_ms"] <= lat["p95_ms"]

    calls.clear()
    thr = measure_throughput(fake_predict, texts, batch_size=10)
    assert len(calls) == 1 + 3 and sum(len(b) for b in calls[1:]) == len(texts)
    assert len(calls[1][0]) == max(len(t) for t in texts)  # longest first
    assert thr["texts_per_s"] > 0 and thr["n"] == len(texts)
    with pytest.raises(AfroCometError):
        measure_latency(fake_predict, [], batch_size=1)


def test_torch_model_timings_are_positive(setup):
    tokenizer, texts = setup
    model = tiny_model(len(tokenizer))
    logits = torch_predictor(model, tokenizer, max_length=16)(texts[:4])
    assert isinstance(logits, np.ndarray) and logits.shape == (4, 3)
    lat = latency(model, tokenizer, texts, batch_size=1, warmup=2, repeats=10, max_length=16)
    assert lat["p50_ms"] > 0 and lat["p95_ms"] >= lat["p50_ms"] and lat["mean_ms"] > 0 and lat["n"] == 10
    assert throughput(model, tokenizer, texts, batch_size=8, max_length=16)["texts_per_s"] > 0


def test_peak_memory_sees_a_temporary_allocation():
    def allocate():
        x = torch.ones(16 * 1024 * 1024)  # 64 MiB, written, freed on return
        return float(x[-1])

    big = peak_memory(allocate)
    assert 60 * 2**20 <= big < 200 * 2**20
    assert peak_memory(allocate) >= 60 * 2**20  # measured again: the earlier peak does not hide it
    assert peak_memory(lambda: None) < 16 * 2**20


def test_compare_has_each_side_and_ratios(setup):
    tokenizer, texts = setup
    teacher = tiny_model(len(tokenizer), hidden=64, layers=4)
    student = tiny_model(len(tokenizer), hidden=32, layers=1)
    result = compare(teacher, student, tokenizer, tokenizer, texts, threads=1, warmup=1, repeats=5,
                     throughput_batch_size=8, max_length=16)
    assert result["threads"] == 1 and result["n_texts"] == len(texts)
    for side in ("teacher", "student"):
        r = result[side]
        assert r["latency"]["p50_ms"] > 0 and r["throughput"]["texts_per_s"] > 0
        assert r["parameters"] > 0 and r["disk_bytes"] > 0 and r["memory_bytes"] >= r["weights_bytes"] > 0
    ratios = result["ratios"]
    assert set(ratios) >= {"latency", "parameters", "disk_bytes", "memory_bytes", "throughput"}
    assert ratios["parameters"] > 1 and ratios["disk_bytes"] > 1
    assert ratios["parameters"] == pytest.approx(result["teacher"]["parameters"] / result["student"]["parameters"])
    ne = {side: result[side]["non_embedding_parameters"] for side in ("teacher", "student")}
    assert 0 < ne["student"] < result["student"]["parameters"]
    assert ratios["non_embedding_parameters"] == pytest.approx(ne["teacher"] / ne["student"])
    assert ratios["latency"] > 0 and ratios["throughput"] > 0
    # The run stores this result as its `efficiency` block; the report reads every measure of it.
    from afrocomet.report.efficiency import EFFICIENCY, _efficiency_rows

    rows = _efficiency_rows({"efficiency": result})
    assert len(rows) == len(EFFICIENCY) + 1 and all("-" not in row.values() for row in rows.values()), rows
    # and both timed again in alternating rounds, each at the thread count its column chose
    inter = result["latency_interleaved"]
    assert inter["threads"] == {side: result[side]["latency"]["threads"] for side in ("teacher", "student")}
    assert len(inter["teacher_p50_ms"]) == len(inter["student_p50_ms"]) == inter["rounds"] and inter["ratio_median"] > 0
    assert f"latency p50, {inter['rounds']} interleaved rounds" in rows
    from afrocomet.bench.efficiency import latency_ratio

    assert latency_ratio(result) == (inter["ratio_median"], "interleaved rounds")
    assert latency_ratio({"ratios": ratios}) == (ratios["latency"], "one after the other")  # an older results.json


def test_latency_is_each_models_best_thread_count(setup):
    """Batch-1 latency keeps the lower p50 of the current thread count and one thread, and says which:
    a predictor slow on one thread is timed on two, one slow on two threads on one."""
    import time

    from afrocomet.bench.efficiency import best_latency
    from afrocomet.device import torch_threads

    _, texts = setup
    for slow_on, fast_on in ((1, 2), (2, 1)):
        def predict(batch, slow_on=slow_on):
            time.sleep(0.004 if torch.get_num_threads() == slow_on else 0.0005)

        with torch_threads(2):
            result = best_latency(predict, texts, (1,), warmup=0, repeats=5)
            assert torch.get_num_threads() == 2  # restored
        assert result["threads"] == fast_on and result["p50_ms"] < 3, result
    with torch_threads(2):  # no other count asked: the current one
        assert best_latency(lambda batch: None, texts, (), warmup=0, repeats=2)["threads"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_and_latency(setup):
    tokenizer, texts = setup
    model = tiny_model(len(tokenizer))
    assert peak_memory(lambda: torch.ones(1024 * 1024, device="cuda").sum().item(), "cuda") >= 4 * 2**20
    lat = latency(model, tokenizer, texts, warmup=2, repeats=5, device="cuda")
    assert lat["p50_ms"] > 0


def test_compiled_predictor_matches_eager(setup, one_thread):
    """torch.compile (dynamic shapes) gives the eager model's logits for several lengths and batch sizes."""
    tokenizer, texts = setup
    model = tiny_model(len(tokenizer))
    eager = torch_predictor(model, tokenizer, max_length=32)
    fast = torch_predictor(model, tokenizer, max_length=32, compile=True)
    for batch in (texts[:1], texts[1:2], texts[:5]):
        np.testing.assert_allclose(fast(batch), eager(batch), atol=1e-5, rtol=1e-4)


def test_compile_failure_is_one_clear_error(setup, monkeypatch):
    tokenizer, texts = setup

    def broken(model, **kwargs):
        def call(**inputs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    predict = torch_predictor(tiny_model(len(tokenizer)), tokenizer, compile=True)
    with pytest.raises(AfroCometError, match=r"torch.compile failed .*No working C\+\+ compiler found\); .*without --compile"):
        predict(texts[:1])
