"""Small models and tokenizers that the tests build themselves (no download)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

WORDS = "ina son wannan sosai ban ji dadin ba yau rana ce mai kyau allah ya isa gaskiya".split()


def tiny_tokenizer():
    """A word-level tokenizer with XLM-R's special tokens: <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")


def tiny_model(vocab_size: int, hidden: int = 32, layers: int = 2):
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                              intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=3,
                              pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return XLMRobertaForSequenceClassification(config).eval()


# ----------------------------------------------------------------------------- saved folders (export, bench)


def train_briefly(model, tokenizer, texts: list[str], labels: list[int], steps: int = 80) -> None:
    """A few AdamW steps so that the model predicts more than one class."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(texts), (32,), generator=gen).tolist()
        enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=64, padding=True, return_tensors="pt")
        model(**enc, labels=torch.tensor([labels[i] for i in idx])).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, afrisenti_dir):
    """A tiny-student classifier trained briefly on Hausa tweets with its own 300-piece tokenizer, saved."""
    from afrocomet.data.afrisenti import read_tsv
    from afrocomet.data.schema import LABELS
    from afrocomet.models.build import build_model
    from afrocomet.tokenizer import train_tokenizer

    train = read_tsv(afrisenti_dir / "hau" / "train.tsv")[::14][:1000]  # rows across the label-sorted file
    texts = [ex.text for ex in train]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    model = build_model("tiny-student", vocab_size=len(tokenizer), seed=0)
    with _threads(1):
        train_briefly(model, tokenizer, texts, [LABELS.index(ex.label) for ex in train])
    out = tmp_path_factory.mktemp("classifier") / "student"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_onnx_dir(tmp_path_factory, tiny_classifier_dir, afrisenti_dir):
    """`tiny_classifier_dir` exported to ONNX with int8, parity on 300 Hausa test tweets."""
    from afrocomet.export import export_onnx

    out = tmp_path_factory.mktemp("export") / "onnx"
    with _threads(1):
        export_onnx(tiny_classifier_dir, out, int8=True, languages=["hau"], data_dir=afrisenti_dir, max_texts=300)
    return out


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def wait_until(proc, ready, timeout: float, *, poll: float = 0.01, output=None) -> None:
    """Poll `ready()` while the subprocess `proc` runs: fail if it ends first (with `output()`, or its
    stderr) or if `timeout` seconds pass (without waiting on a process that is still alive)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, output() if output else proc.communicate()
        assert time.monotonic() < deadline, f"not ready after {timeout}s"
        time.sleep(poll)


# ----------------------------------------------------------------------------- the real command, in a subprocess

COMMAND = [sys.executable, "-m", "afrocomet"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (hidden ones too) with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def one_error(args: list[str], cwd: Path, *needles: str, env: dict | None = None, prefix: list[str] | None = None,
              timeout: float = 300) -> str:
    """Run `afrocomet ARGS` (after `prefix`, e.g. `unshare ...`) in `cwd`: exit 2, exactly one stderr line
    `afrocomet: error: ...` holding every needle (no traceback), `cwd` byte-identical afterwards."""
    before = tree(cwd)
    proc = subprocess.run([*(prefix or []), *COMMAND, *args], capture_output=True, text=True, env=env or ENV,
                          cwd=cwd, timeout=timeout)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("afrocomet: error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree(cwd) == before
    return lines[0]


def save_tiny_classifier(folder: Path) -> Path:
    """A tiny 3-class sentiment classifier (negative, neutral, positive) with its tokenizer, saved in `folder`."""
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_swa_run_config(folder: Path, afrisenti_dir: Path, rows: dict[str, int], stage: dict, settings: dict,
                        **model_fields) -> Path:
    """A run config (returned: folder/run.yaml) of a tiny teacher and student saved in `folder` (the
    presets' fields changed by `model_fields`) with a tokenizer trained on swa tweets, swa train/dev/test
    cut to `rows` each, stages teacher-finetune, stage1, stage2 (each with `stage`'s fields) and the run
    fields `settings`."""
    import yaml

    from afrocomet.data.afrisenti import read_tsv
    from afrocomet.models.build import build_model
    from afrocomet.models.presets import get_preset
    from afrocomet.tokenizer import train_tokenizer

    tok = train_tokenizer([ex.text for ex in read_tsv(afrisenti_dir / "swa" / "train.tsv")][:600], vocab_size=300)
    for name in ("tiny-teacher", "tiny-student"):
        config = get_preset(name).to_config(vocab_size=len(tok), **model_fields)
        build_model(config, "mlm", seed=0).save_pretrained(folder / name)
        tok.save_pretrained(folder / name)
    data = {"languages": ["swa"], "download": False, "max_length": 32}
    for split, n in rows.items():
        lines = (afrisenti_dir / "swa" / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        stride = max(1, (len(lines) - 1) // n)  # sorted by label: every k-th row keeps all labels
        (folder / f"{split}.tsv").write_text("".join(lines[:1] + lines[1::stride][:n]), encoding="utf-8")
        data[split] = str(folder / f"{split}.tsv")
    config = {
        "seed": 0, "device": "cpu", "data": data, **settings,
        "model": {"teacher": str(folder / "tiny-teacher"), "student": str(folder / "tiny-student")},
        "stages": [{"name": name, "kind": kind, **stage} for name, kind in
                   (("teacher-finetune", "teacher-finetune"), ("stage1", "distill-mlm"), ("stage2", "distill-task"))],
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
