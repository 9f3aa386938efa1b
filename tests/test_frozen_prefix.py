"""Frozen-prefix feature cache (distill/frozen_prefix.py): the cached path gives the live model's
logits (fp32 storage: exactly; fp16: within its rounding), the key follows the frozen weights only,
a teacher-finetune stage with it follows the same loss curve (dropout 0), resumes exactly, and
`--no-frozen-cache` turns it off.

Tolerances: fp32 storage, the logits equal the live eval-mode model's to 1e-5 (the same operations;
fp32 rounding differs only because the cache was built on batches padded to other lengths);
fp16 storage, each cached state is the live one rounded (|d| <= 2^-11 |x| + 1e-5), and the logits differ by
at most 2e-3 of their largest magnitude; loss curves of 20 steps (the loss varies by ~0.1 from step
to step) agree to 1e-3 relative, fp16 rounding carried through 20 AdamW steps.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, XLMRobertaConfig, XLMRobertaForSequenceClassification

from afrocomet.config import StageConfig
from afrocomet.data.batching import collate, encode
from afrocomet.distill.frozen_prefix import FrozenPrefix, cache_dir, frozen_layers, open_or_build, prefix_key
from afrocomet.distill.trainer import train_stage
from afrocomet.run.teacher import freeze_teacher
from helpers import WORDS, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
FAMILIES = ("xlm-roberta", "bert")


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AFROCOMET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def make_data(tok, n: int = 40, seed: int = 0):
    """Texts whose label is their first word's position in WORDS modulo 3 (learnable), 1 to 14 tokens long."""
    rng = random.Random(seed)
    texts = [[*rng.choices(WORDS[:6], k=1), *rng.choices(WORDS, k=rng.randint(0, 11))] for _ in range(n)]
    return encode(tok, [" ".join(t) for t in texts], 16, labels=[WORDS.index(t[0]) % 3 for t in texts])


def make_model(tok, family: str, *, dropout: float = 0.1, layers: int = 3, frozen: int = 2, seed: int = 0):
    """A tiny classifier (XLM-R or BERT) with its embeddings and lowest `frozen` layers frozen by the run's own
    freeze_teacher."""
    torch.manual_seed(seed)
    sizes = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=40, num_labels=3, pad_token_id=1,
                 hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, classifier_dropout=dropout,
                 initializer_range=0.2)  # outputs that depend on the input (at 0.02 every loss is ~ln 3)
    model = (XLMRobertaForSequenceClassification(XLMRobertaConfig(**sizes)) if family == "xlm-roberta"
             else BertForSequenceClassification(BertConfig(**sizes)))
    freeze_teacher(model, True, frozen)
    return model


def batches(data, tok):
    """Padded batches of different lengths (a short one, a mixed one, the longest texts)."""
    lengths = [len(ids) for ids in data.ids]
    order = sorted(range(len(data)), key=lengths.__getitem__)
    for index in (order[:4], [order[0], order[20], order[-1], order[9], order[30]], order[-6:]):
        batch = collate(data, index, tok.pad_token_id)
        yield {**batch, "index": torch.tensor(index)}


def forward(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cached_logits_equal_the_live_models(tok, family, dtype):
    data = make_data(tok)
    model = make_model(tok, family)
    assert frozen_layers(model) == 2
    keys = list(model.state_dict())
    cache = open_or_build(model, data, tok.pad_token_id, 2, device="cpu", dtype=dtype, batch_size=7)
    assert cache.layers == 2 and cache.dtype == str(dtype).split(".")[-1] and len(cache) == len(data)
    model.eval()  # the frozen layers live in eval mode: what the cache holds
    with torch.no_grad():
        for batch in batches(data, tok):
            live = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         output_hidden_states=True)
            with cache.feeding(model, batch):
                cached = forward(model, batch)
            if dtype == torch.float32:  # the same operations, on batches padded to other lengths at the build
                torch.testing.assert_close(cached, live.logits, rtol=1e-5, atol=1e-5)
            else:  # storage rounding: each state within half an fp16 ulp, logits within 2e-3 of their scale
                real = batch["attention_mask"].bool()
                stored = cache.hidden(batch["index"], batch["attention_mask"])[real]
                state = live.hidden_states[2][real]
                assert ((stored - state).abs() <= state.abs() * 2 ** -11 + 1e-5).all()
                assert (cached - live.logits).abs().max() <= 2e-3 * live.logits.abs().max()
    assert list(model.state_dict()) == keys and len(model.base_model.encoder.layer) == 3  # nothing left swapped


def test_the_model_is_restored_when_the_forward_fails(tok):
    data = make_data(tok)
    model = make_model(tok, "xlm-roberta")
    embeddings, layers = model.roberta.embeddings, model.roberta.encoder.layer
    cache = open_or_build(model, data, tok.pad_token_id, 2, device="cpu")

    def fail(module, args, output):
        raise RuntimeError("head failed")

    model.classifier.register_forward_hook(fail)
    batch = next(batches(data, tok))
    with pytest.raises(RuntimeError, match="head failed"), cache.feeding(model, batch):
        forward(model, batch)
    assert model.roberta.embeddings is embeddings and model.roberta.encoder.layer is layers


def test_cache_file_is_ragged_and_memory_mapped(tok):
    data = make_data(tok, n=10)
    model = make_model(tok, "bert")
    cache = open_or_build(model, data, tok.pad_token_id, 2, device="cpu")
    lengths = [len(ids) for ids in data.ids]
    assert cache.path.parent == cache_dir() and cache.lengths == lengths and cache.offsets[-1] == sum(lengths)
    assert cache._hidden.get_shape() == [sum(lengths), 32] and cache.dtype == "float16"
    mask = collate(data, [2, 4], tok.pad_token_id)["attention_mask"]
    hidden = cache.hidden(torch.tensor([2, 4]), mask)
    assert hidden.dtype == torch.float32 and hidden[~mask.bool()].abs().sum() == 0
    with pytest.raises(Exception, match="key mismatch"):
        FrozenPrefix(cache.path, "other")


# ----------------------------------------------------------------------------- key and invalidation


def test_key_follows_the_frozen_weights_and_not_the_trained_ones(tok):
    data = make_data(tok)
    model = make_model(tok, "xlm-roberta")
    key = prefix_key(model, 2, data)
    with torch.no_grad():
        model.roberta.encoder.layer[2].output.dense.weight.add_(1.0)  # trained (upper) layer
        model.classifier.out_proj.bias.add_(1.0)  # the head
    assert prefix_key(model, 2, data) == key
    assert prefix_key(model, 1, data) != key and prefix_key(model, 2, make_data(tok, seed=1)) != key
    assert prefix_key(model, 2, data, torch.float32) != key
    with torch.no_grad():
        model.roberta.encoder.layer[1].attention.self.query.weight[0, 0] += 1e-3  # a frozen layer
    assert prefix_key(model, 2, data) != key
    with torch.no_grad():
        model.roberta.encoder.layer[1].attention.self.query.weight[0, 0] -= 1e-3
        model.roberta.embeddings.LayerNorm.bias[3] += 1e-3  # the frozen embeddings
    assert prefix_key(model, 2, data) != key


def test_a_changed_frozen_weight_rebuilds_the_cache(tok):
    data = make_data(tok)
    model = make_model(tok, "bert").eval()
    first = open_or_build(model, data, tok.pad_token_id, 2, device="cpu", dtype=torch.float32)
    again = open_or_build(model, data, tok.pad_token_id, 2, device="cpu", build=False, dtype=torch.float32)
    assert again.path == first.path  # reused
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.mul_(1.5)
    assert open_or_build(model, data, tok.pad_token_id, 2, device="cpu", build=False, dtype=torch.float32) is None
    second = open_or_build(model, data, tok.pad_token_id, 2, device="cpu", dtype=torch.float32)
    assert second.path != first.path and len(list(cache_dir().glob("*.safetensors"))) == 2
    batch = next(batches(data, tok))
    with torch.no_grad(), second.feeding(model, batch):
        cached = forward(model, batch)
    with torch.no_grad():
        torch.testing.assert_close(cached, forward(model, batch), rtol=1e-5, atol=1e-5)  # not the stale states


def test_what_can_be_cached(tok):
    assert frozen_layers(make_model(tok, "bert", frozen=0)) == 0  # embeddings alone
    assert frozen_layers(make_model(tok, "bert", frozen=5)) == 3  # all layers: only the head trains
    model = make_model(tok, "bert")
    model.bert.embeddings.requires_grad_(True)
    assert frozen_layers(model) is None  # trained embeddings change every layer's input
    model = make_model(tok, "bert")
    model.bert.encoder.layer[0].output.LayerNorm.weight.requires_grad_(True)
    assert frozen_layers(model) == 0  # a prefix is frozen only up to the first trained tensor


# ----------------------------------------------------------------------------- the stage


def stage(**overrides) -> StageConfig:
    values = dict(name="teacher-finetune", kind="teacher-finetune", epochs=4, batch_size=8, lr=1e-3,
                  warmup_ratio=0.0, progress_every=1000, patience=0)
    return StageConfig(**{**values, **overrides})


def run_stage(tok, data, folder, family="xlm-roberta", dropout=0.0, frozen=2, **overrides):
    model = make_model(tok, family, dropout=dropout, frozen=frozen)
    result = train_stage(stage(**overrides), model, data, tokenizer=tok, out_dir=folder, seed=0, progress=False)
    lines = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return model, result, [r["total"] for r in lines if "total" in r]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stage_with_the_cache_follows_the_live_loss_curve(tok, tmp_path, family):
    data = make_data(tok)
    live, live_result, live_curve = run_stage(tok, data, tmp_path / "live", family, frozen_cache=False)
    cached, result, curve = run_stage(tok, data, tmp_path / "cached", family)
    assert live_result.frozen_cache is None
    assert result.frozen_cache == {"path": str(next(cache_dir().glob("*.safetensors"))), "layers": 2,
                                   "dtype": "float16"}
    assert len(curve) == len(live_curve) == 20 and curve[-1] < curve[0] and torch.tensor(curve).std() > 0.05
    torch.testing.assert_close(torch.tensor(curve), torch.tensor(live_curve), rtol=1e-3, atol=0)
    fresh = make_model(tok, family)
    assert list(cached.state_dict()) == list(live.state_dict()) == list(fresh.state_dict())
    assert all(torch.equal(cached.state_dict()[k], fresh.state_dict()[k]) for k in fresh.state_dict()
               if k.split(".")[1] == "embeddings" or ".layer.0." in k or ".layer.1." in k)  # frozen: untouched


def test_with_dropout_the_upper_layers_train_in_train_mode(tok, tmp_path):
    data = make_data(tok)
    _, _, no_dropout = run_stage(tok, data, tmp_path / "a", dropout=0.0)
    _, result, with_dropout = run_stage(tok, data, tmp_path / "b", dropout=0.3)
    assert result.frozen_cache is not None and with_dropout != no_dropout  # dropout acts above the cache


def test_off_switch_and_where_it_is_not_built(tok, tmp_path):
    data = make_data(tok)
    _, result, _ = run_stage(tok, data, tmp_path / "off", frozen_cache=False)
    assert result.frozen_cache is None and not cache_dir().exists()
    _, result, _ = run_stage(tok, data, tmp_path / "emb", frozen=0)
    assert result.frozen_cache is None and not cache_dir().exists()  # embeddings alone: not worth a cache
    _, result, _ = run_stage(tok, data, tmp_path / "short", max_steps=2)  # less than an epoch: not built...
    assert result.frozen_cache is None and not cache_dir().exists()
    _, result, _ = run_stage(tok, data, tmp_path / "full")
    _, short, _ = run_stage(tok, data, tmp_path / "short2", max_steps=2)  # ...but one already there is used
    assert short.frozen_cache == result.frozen_cache is not None


def test_no_frozen_cache_flag_reaches_every_stage():
    from afrocomet.cli import _resolve_config
    from test_cli import _opts

    config = _resolve_config(None, _opts(quick=True))
    assert any(s.kind == "teacher-finetune" for s in config.stages) and all(s.frozen_cache for s in config.stages)
    config = _resolve_config(None, _opts(quick=True, no_frozen_cache=True))
    assert not any(s.frozen_cache for s in config.stages)


def test_a_stage_with_the_cache_resumes_exactly(tok, tmp_path):
    from afrocomet.distill.checkpoint import list_checkpoints

    data = make_data(tok)
    cfg = stage(epochs=2, checkpoint_every=3, keep_checkpoints=5, eval_every=4)

    def score(model) -> float:  # any deterministic function of the weights will do
        with torch.no_grad():
            return -float(sum(p.abs().mean() for p in model.parameters()))

    def train(resume_from=None):
        model = make_model(tok, "bert", dropout=0.1)
        result = train_stage(cfg, model, data, tokenizer=tok, evaluate=score, out_dir=tmp_path, seed=1,
                             checkpoint_dir=tmp_path / "ckpt", resume_from=resume_from, progress=False)
        return model, result

    full, full_result = train()
    saved = list_checkpoints(tmp_path / "ckpt")
    assert full_result.frozen_cache is not None and [p.name for p in saved] == ["step-00000003", "step-00000006",
                                                                                "step-00000009"]
    resumed, resumed_result = train(resume_from=saved[0])
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    assert {**full_result.to_dict(), "seconds": 0} == {**resumed_result.to_dict(), "seconds": 0}


def test_afrocomet_run_records_the_cache_of_its_teacher_finetune(tmp_path, afrisenti_dir):
    """Through the CLI: a preset teacher fine-tuned with its embeddings and lowest layer frozen, one epoch."""
    from afrocomet.cli import main

    out = tmp_path / "run"
    code = main(["run", "--quick", "--quiet", "--no-ablations", "--data-dir", str(afrisenti_dir), "--languages", "swa",
                 "--train-rows", "100", "--dev-rows", "30", "--sampling-alpha", "0.5", "--freeze-teacher-embeddings",
                 "--freeze-teacher-layers", "1", "--out", str(out)])
    assert code == 0
    stages = json.loads((out / "results.json").read_text())["stages"]
    assert stages["teacher-finetune"]["epochs"] >= 1
    assert stages["teacher-finetune"]["frozen_cache"]["layers"] == 1
    assert all(s.get("frozen_cache") is None for name, s in stages.items() if name != "teacher-finetune")
