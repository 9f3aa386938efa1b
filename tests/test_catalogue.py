"""The bad-input catalogue of README.md ("Bad input: what each gives"), one test per row.

Every case goes through the CLI (`afrocomet.cli.main`, in-process, or `python -m afrocomet` for
signals) and asserts: exit code 2 (130/143 for an interrupt), exactly one line on stderr starting
`afrocomet: error:` that names the file / field, and that the folder it ran in is byte-identical
afterwards (nothing written, earlier outputs untouched, no temporary leftovers).

Rows already covered elsewhere are referenced in the README table instead of repeated here:
tests/test_bad_input_cli.py (data files), tests/test_predict.py (prediction inputs, model folders),
tests/test_config.py (config parsing through the API).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from afrocomet.cli import main
from helpers import WORDS, tiny_model, tiny_tokenizer, wait_until

GOOD = "tweet\tlabel\n" + "".join(f"{w} {v}\t{lab}\n" for w, v, lab in zip(
    WORDS, reversed(WORDS), ["positive", "negative", "neutral"] * 6))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- helpers


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (hidden ones too) with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def fails(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI; assert exit 2 and one `afrocomet: error:` line holding every needle; return it."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("afrocomet: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def fails_cleanly(capsys, folder: Path, argv: list[str], *needles: str) -> str:
    """`fails`, and `folder` is byte-identical afterwards."""
    before = tree(folder)
    line = fails(capsys, argv, *needles)
    assert tree(folder) == before
    return line


@pytest.fixture
def work(tmp_path):
    """A folder with a small labelled train/test pair and an earlier run's output folder."""
    (tmp_path / "train.tsv").write_text(GOOD, encoding="utf-8")
    (tmp_path / "test.tsv").write_text(GOOD, encoding="utf-8")
    earlier = tmp_path / "out"
    earlier.mkdir()
    (earlier / "results.json").write_text('{"earlier": true}\n', encoding="utf-8")
    return tmp_path


def quick(work: Path, *more: str, out: str = "new") -> list[str]:
    return ["run", "--quick", "--quiet", "--no-ablations", "--train", str(work / "train.tsv"), "--test",
            str(work / "test.tsv"), "--out", str(work / out), *more]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_thread):
    """Saved tiny folders: a classifier (predict/evaluate) and a masked-LM teacher (run --teacher)."""
    from afrocomet.models.build import build_model
    from afrocomet.models.presets import get_preset

    root = tmp_path_factory.mktemp("models")
    tok = tiny_tokenizer()
    classifier = tiny_model(len(tok))
    classifier.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    classifier.config.label2id = {v: k for k, v in classifier.config.id2label.items()}
    classifier.save_pretrained(root / "classifier")
    tok.save_pretrained(root / "classifier")
    teacher = get_preset("tiny-teacher").to_config(vocab_size=len(tok))
    build_model(teacher, "mlm", seed=0).save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    return root


def broken(models: Path, work: Path, which: str, how: str) -> Path:
    """A copy of a saved model folder with one thing wrong."""
    folder = work / f"{which}-{how}"
    shutil.copytree(models / which, folder)
    weights = folder / "model.safetensors"
    if how == "no-weights":
        weights.unlink()
    elif how == "pickled":
        weights.rename(folder / "pytorch_model.bin")  # any bytes: it must be refused unread
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "small-vocab":
        config = json.loads((folder / "config.json").read_text())
        config["vocab_size"] = 8
        (folder / "config.json").write_text(json.dumps(config))
    return folder


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("text, needle", [
    ("seed: 1\nbogus: 2\n", ":2: unknown key 'bogus'"),
    ("stages:\n  - name: s\n    kind: distill-task\n    temprature: 2\n", ":4: unknown key 'temprature' in stages[0]"),
    ("seed: 1\nseeds: two\n", ":2: 'seeds' must be an integer"),
    ("stages:\n  - name: s\n    batch_size: 2.5\n", ":3: 'stages[0].batch_size' must be an integer"),
    ("stages:\n  - name: s\n    batch_size: 0\n", "batch_size must be > 0, got 0"),
    ("stages:\n  - name: s\n    batch_size: -8\n", "batch_size must be > 0, got -8"),
    ("stages:\n  - name: s\n    temperature: 0\n", "temperature must be > 0, got 0"),
    ("stages:\n  - name: s\n    temperature: -1.5\n", "temperature must be > 0, got -1.5"),
    ("stages:\n  - name: s\n    relation_heads: 0\n", "relation_heads must be > 0"),
], ids=["unknown-key", "unknown-stage-key", "wrong-type", "float-for-int", "batch-size-zero", "batch-size-negative",
        "temperature-zero", "temperature-negative", "relation-heads-zero"])
def test_bad_config_file(work, capsys, text, needle):
    config = write(work / "run.yaml", text)
    fails_cleanly(capsys, work, ["distill", "--config", str(config), "--out", str(work / "new")], str(config), needle)


@pytest.mark.parametrize("argv, needle", [
    (["--temperature", "0"], "temperature must be > 0, got 0.0"),
    (["--temperature", "-2"], "temperature must be > 0, got -2.0"),
    (["--layer-map", "0-1"], "--layer-map: expected pairs like 0:5"),
    (["--seeds", "0"], "'--seeds'"),
], ids=["temperature-zero", "temperature-negative", "layer-map-syntax", "seeds-zero"])
def test_bad_run_flag(work, capsys, argv, needle):
    fails_cleanly(capsys, work, quick(work, *argv), needle)


@pytest.mark.parametrize("flag", ["--batch-size", "--max-length"])
@pytest.mark.parametrize("value", ["0", "-4"])
def test_bad_predict_flag(models, work, capsys, flag, value):
    src = write(work / "in.tsv", "tweet\nina son\n")
    fails_cleanly(capsys, work, ["predict", "--model", str(models / "classifier"), "--input", str(src), "--output",
                                 str(work / "preds.tsv"), flag, value], f"'{flag}'", value, "--help")


# ----------------------------------------------------------------------------- pre-flight (before any training)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any stage starts: pre-flight errors must come first."""
    import afrocomet.distill.trainer as trainer

    def boom(*args, **kwargs):
        raise AssertionError("a stage started training before the pre-flight check failed")

    monkeypatch.setattr(trainer, "train_stage", boom)


def test_layer_map_past_the_teacher_flag(work, capsys, no_training):
    t0 = time.perf_counter()
    fails_cleanly(capsys, work, quick(work, "--layer-map", "0:99"),
                  "stage 'stage1' layer_map", "teacher layer 99 is out of range (valid 0..1)", "tiny-teacher: 2 layers")
    assert time.perf_counter() - t0 < 20


def test_layer_map_past_the_student_config(work, capsys, no_training):
    config = write(work / "run.yaml", f"""model: {{teacher: tiny-teacher, student: tiny-student, vocab_size: 100}}
data: {{train: {work / 'train.tsv'}, test: {work / 'test.tsv'}, max_length: 16}}
stages:
  - {{name: distil, kind: distill-task, layer_map: [[0, 1], [3, 1]]}}
""")
    fails_cleanly(capsys, work, ["distill", "--config", str(config), "--out", str(work / "new")],
                  f"{config}: stage 'distil' layer_map", "student layer 3 is out of range (valid 0..0)")


def test_relation_heads_that_fit_neither_hidden_size(work, capsys, no_training):
    config = write(work / "run.yaml", f"""model: {{teacher: tiny-teacher, student: tiny-student, vocab_size: 100}}
data: {{train: {work / 'train.tsv'}, test: {work / 'test.tsv'}, max_length: 16}}
stages:
  - {{name: rel, kind: distill-mlm, matching: relations, relation_heads: 3}}
""")
    fails_cleanly(capsys, work, ["distill", "--config", str(config), "--out", str(work / "new")],
                  f"{config}: stage 'rel' matching 'relations'", "hidden 32", "hidden 64",
                  "3 relation heads must divide both hidden sizes")


def test_doctor_checks_the_layer_map_too(work, capsys):
    config = write(work / "run.yaml", f"""data: {{train: {work / 'train.tsv'}, test: {work / 'test.tsv'}, max_length: 16}}
model: {{teacher: tiny-teacher, student: tiny-student}}
stages:
  - {{name: s, kind: distill-task, layer_map: [[0, 7]]}}
""")
    fails_cleanly(capsys, work, ["doctor", "--config", str(config)], "stage 's' layer_map", "teacher layer 7")


def test_output_folder_of_another_run(work, capsys):
    fails_cleanly(capsys, work, quick(work, out="out"), str(work / "out"), "another run's results", "--overwrite")


# ----------------------------------------------------------------------------- model folders


@pytest.mark.parametrize("how, needle", [
    ("no-weights", "model folder has no weights (model.safetensors)"),
    ("pickled", "model folder has only pickled pytorch_model.bin weights"),
    ("truncated", "not a readable safetensors file (truncated or corrupt?"),
])
@pytest.mark.parametrize("command", ["predict", "evaluate", "run"])
def test_bad_model_folder(models, work, capsys, no_training, command, how, needle):
    src = write(work / "in.tsv", "tweet\tlabel\nina son\tpositive\n")
    if command == "run":
        folder = broken(models, work, "teacher", how)
        argv = quick(work, "--teacher", str(folder), "--student", "tiny-student")
    else:
        folder = broken(models, work, "classifier", how)
        argv = [command, "--model", str(folder)] + (
            ["--input", str(src), "--output", str(work / "preds.tsv")] if command == "predict" else
            ["--test", str(src), "--out", str(work / "metrics.json")])
    where = folder / "model.safetensors" if how == "truncated" else folder
    fails_cleanly(capsys, work, argv, f"afrocomet: error: {where}: {needle}")


def test_tokenizer_larger_than_the_teachers_vocab(models, work, capsys, no_training):
    folder = broken(models, work, "teacher", "small-vocab")  # 2 layers: --quick's 6 frozen would not fit
    fails_cleanly(capsys, work, quick(work, "--teacher", str(folder), "--student", "tiny-student",
                                      "--freeze-teacher-layers", "1"),
                  f"{folder}: the tokenizer has", "the teacher's embedding only 8")


def test_tokenizer_larger_than_the_classifiers_vocab(models, work, capsys):
    folder = broken(models, work, "classifier", "small-vocab")
    src = write(work / "in.tsv", "tweet\tlabel\nina son\tpositive\n")
    for argv in (["predict", "--model", str(folder), "--input", str(src), "--output", str(work / "p.tsv")],
                 ["evaluate", "--model", str(folder), "--test", str(src)]):
        fails_cleanly(capsys, work, argv, f"{folder}: the tokenizer has", "embedding only 8")


# ----------------------------------------------------------------------------- disk full


def _disk_full(monkeypatch):
    """The first fsync of a written file fails as a full disk does (ENOSPC often surfaces there)."""
    real = os.fsync

    def fsync(fd):
        if os.path.isfile(f"/proc/self/fd/{fd}") or not os.path.exists("/proc/self/fd"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_predict_keeps_the_earlier_file(models, work, capsys, monkeypatch):
    src = write(work / "in.tsv", "tweet\nina son\nyau rana\n")
    out = write(work / "preds.tsv", "ID\tlabel\n0\tearlier\n")
    _disk_full(monkeypatch)
    fails_cleanly(capsys, work, ["predict", "--model", str(models / "classifier"), "--input", str(src), "--output",
                                 str(out)], f"{out}: could not write: No space left on device")


def test_disk_full_evaluate_keeps_the_earlier_file(models, work, capsys, monkeypatch):
    src = write(work / "in.tsv", "tweet\tlabel\nina son\tpositive\n")
    out = write(work / "metrics.json", '{"earlier": true}\n')
    _disk_full(monkeypatch)
    fails_cleanly(capsys, work, ["evaluate", "--model", str(models / "classifier"), "--test", str(src), "--out",
                                 str(out)], f"{out}: could not write: No space left on device")


def test_disk_full_run_keeps_the_earlier_run(work, capsys, monkeypatch):
    _disk_full(monkeypatch)
    fails_cleanly(capsys, work, quick(work, "--overwrite", out="out"), "could not write: No space left on device")


# ----------------------------------------------------------------------------- interrupt


def _default_sigint() -> None:
    """Ctrl-C as in a terminal: a shell starts background jobs (and so, possibly, this test run) with
    SIGINT ignored, and Python then keeps ignoring it; the child gets the default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c_raises():
    """In this process: SIGINT raises KeyboardInterrupt, whatever the test run was started with."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_mid_run_leaves_the_earlier_run(work, afrisenti_dir):
    """A real Ctrl-C (SIGINT) to `afrocomet run --quick` once its temporary run folder exists."""
    before = tree(work)
    proc = subprocess.Popen([sys.executable, "-m", "afrocomet", "run", "--quick", "--quiet", "--overwrite", "-l", "swa",
                             "--data-dir", str(afrisenti_dir), "--out", str(work / "out")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=work,
                            preexec_fn=_default_sigint)
    try:
        # the run is being built beside `out`
        wait_until(proc, (work / "out.partial" / "config.yaml").is_file, 120, poll=0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    # exit 130, or (seen once in 4 full-suite runs on a loaded machine, after the same one line; cause not
    # found) ended by the SIGINT itself, which a shell reports as $? = 130 as well
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
    assert err.decode().strip().splitlines()[-1] == "afrocomet: interrupted", err
    partial = work / "out.partial"
    if partial.exists():  # the signal came after a stage had finished: kept, and only to be resumed
        from afrocomet.workdir import has_resumable_state

        assert has_resumable_state(partial)
        shutil.rmtree(partial)
    assert tree(work) == before  # earlier run untouched, no temporary folder or file left


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_writing_leaves_the_earlier_run(work, capsys, monkeypatch, ctrl_c_raises, signum):
    """The same in-process, the signal arriving while the run writes its first file (config.yaml)."""
    import afrocomet.run.steps as steps

    real = steps.load_datasets

    def interrupted(config):
        assert (work / "out.partial" / "config.yaml").is_file()  # mid-write: the run's folder has a file
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler runs here
        return real(config)

    monkeypatch.setattr(steps, "load_datasets", interrupted)
    before, handler = tree(work), signal.getsignal(signal.SIGTERM)
    try:
        capsys.readouterr()
        code = main(quick(work, "--overwrite", out="out"))
        said = "afrocomet: terminated" if signum == signal.SIGTERM else "afrocomet: interrupted"
        assert code == 128 + signum and capsys.readouterr().err.strip().splitlines()[-1] == said
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert tree(work) == before
