"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# The repo is a clone with the shared folder beside it: <root>/main (this repo) and <root>/shared.
AFRISENTI_DIR = Path(__file__).resolve().parents[2] / "shared/data/afrisenti"


@pytest.fixture(scope="session")
def afrisenti_dir() -> Path:
    """The official AfriSenti files (read-only); tests that need them skip if they are absent."""
    if not (AFRISENTI_DIR / "hau" / "train.tsv").is_file():
        pytest.skip(f"AfriSenti data not found at {AFRISENTI_DIR}")
    return AFRISENTI_DIR
