"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The repo is a clone with the shared folder beside it: <root>/main (this repo) and <root>/shared.
AFRISENTI_DIR = Path(__file__).resolve().parents[2] / "shared/data/afrisenti"


@pytest.fixture(scope="session")
def afrisenti_dir() -> Path:
    """The official AfriSenti files (read-only); tests that need them skip if they are absent."""
    if not (AFRISENTI_DIR / "hau" / "train.tsv").is_file():
        pytest.skip(f"AfriSenti data not found at {AFRISENTI_DIR}")
    return AFRISENTI_DIR


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and other jobs on a 2-core machine cannot stall them."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
