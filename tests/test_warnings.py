"""Warnings reach the user as one line, `afrocomet: warning: <what>`, on the CLI's real stderr;
library noise (warnings and log records of transformers, torch, accelerate ...) only with --verbose."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
ENV.pop("PYTHONWARNINGS", None)


def _afrocomet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "afrocomet", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=300)


def _swa_copy(root: Path, afrisenti_dir: Path, extra_dev_row: str) -> Path:
    (root / "swa").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        shutil.copyfile(afrisenti_dir / "swa" / f"{split}.tsv", root / "swa" / f"{split}.tsv")
    with open(root / "swa" / "dev.tsv", "a", encoding="utf-8") as fh:
        fh.write(extra_dev_row)
    return root


def test_changed_data_file_warns_in_one_line_before_the_error(afrisenti_dir, tmp_path):
    data = _swa_copy(tmp_path / "d", afrisenti_dir, "mpya\tsuper\n")  # differs from the pinned sum, and is bad
    proc = _afrocomet("data", "--data-dir", str(data), "-l", "swa", "--no-download", cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("afrocomet: warning: ") and "differ from AfriSenti" in lines[0], lines
    assert "swa/dev.tsv" in lines[0] and "UserWarning" not in proc.stderr and "warn(" not in proc.stderr
    assert lines[1].startswith("afrocomet: error: ") and "dev.tsv" in lines[1], lines


def test_changed_data_file_that_parses_warns_once_and_runs(afrisenti_dir, tmp_path):
    data = _swa_copy(tmp_path / "d", afrisenti_dir, "mpya\tpositive\n")
    proc = _afrocomet("data", "--data-dir", str(data), "-l", "swa", "--no-download", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.splitlines()[0]]
    assert proc.stderr.startswith("afrocomet: warning: ") and "swa/dev.tsv" in proc.stderr


NOISE = textwrap.dedent("""
    import logging, sys, warnings
    from afrocomet import quiet

    with quiet.cli_output():
        quiet.setup(verbose=sys.argv[1] == "verbose")
        warnings.warn("library says\\nsomething", FutureWarning)
        logging.getLogger("accelerate.utils").warning("accelerate noise")
        from transformers.utils import logging as hf_logging
        hf_logging.get_logger("transformers.modeling_utils").warning("transformers noise")
        quiet.warn("ours,\\n  on two lines")
        logging.getLogger("afrocomet.export").warning("logged by %s", "afrocomet")
        logging.getLogger("afrocomet").info("not shown at the default level")
""")


def _noise(mode: str, tmp_path: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", NOISE, mode], capture_output=True, text=True, env=ENV,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.splitlines()


def test_library_noise_hidden_and_ours_one_line(tmp_path):
    assert _noise("quiet", tmp_path) == ["afrocomet: warning: ours, on two lines",
                                         "afrocomet: warning: logged by afrocomet"]


def test_verbose_shows_library_noise(tmp_path):
    err = "\n".join(_noise("verbose", tmp_path))
    assert "library says" in err and "accelerate noise" in err and "transformers noise" in err
    assert "afrocomet: warning: ours, on two lines" in err


def test_outside_the_cli_a_warning_is_a_python_warning():
    from afrocomet import quiet

    with pytest.warns(quiet.AfroCometWarning, match="plain"):
        quiet.warn("plain")


def test_cli_has_a_verbose_flag(tmp_path):
    proc = _afrocomet("--verbose", "presets", "--json", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_library_progress_bars_are_off_under_the_cli_unless_verbose(verbose):
    """A folder teacher's load drew transformers' "Loading weights" bars into a run's log: under the
    CLI every load is quiet (in this process, and in any it starts: the environment says so too)."""
    from transformers.utils import logging as hf_logging

    from afrocomet import quiet

    hf_logging.enable_progress_bar()
    try:
        with quiet.cli_output(verbose=verbose):
            assert hf_logging.is_progress_bar_enabled() is verbose
            assert (os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1") is not verbose
    finally:
        hf_logging.enable_progress_bar()
