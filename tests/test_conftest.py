"""tests/conftest.py: missing AfriSenti data skips the data tests locally, and fails them in CI."""

from __future__ import annotations

import pytest

import conftest


def test_missing_data_skips_outside_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        conftest.data_dir_or_skip(tmp_path / "nowhere")


@pytest.mark.parametrize("value", ["true", "1"])
def test_missing_data_fails_in_ci(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI"):
        conftest.data_dir_or_skip(tmp_path / "nowhere")


def test_present_data_is_returned(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    (tmp_path / "hau").mkdir()
    (tmp_path / "hau" / "train.tsv").write_text("tweet\tlabel\n", encoding="utf-8")
    assert conftest.data_dir_or_skip(tmp_path) == tmp_path


def test_caches_are_this_sessions_not_the_users():
    """No test reads or writes ~/.cache/afrocomet: the cache root is a temporary folder of this session."""
    import tempfile
    from pathlib import Path

    from afrocomet.data.download import cache_root
    from afrocomet.distill.cache import cache_dir

    temp = Path(tempfile.gettempdir()).resolve()
    assert cache_root().resolve().is_relative_to(temp) and cache_dir().resolve().is_relative_to(temp)
    assert not cache_root().resolve().is_relative_to(Path.home() / ".cache")
