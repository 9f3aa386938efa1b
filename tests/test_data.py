"""AfriSenti data layer: strict parsing, label checks, data-dir resolution, download, custom data."""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import shutil
import socket
import threading
import warnings
from pathlib import Path

import pytest

from afrocomet.data import (
    ALL_LANGUAGES,
    LABELS,
    PINNED_SHA256,
    UPSTREAM_COMMIT,
    Dataset,
    Example,
    check_label_sets,
    default_cache_dir,
    load_afrisenti,
    load_custom,
    read_tsv,
    resolve_data_dir,
    verify_data_dir,
)
from afrocomet.errors import AfroCometError

COUNTS = {
    "hau": (14172, 2677, 5303),
    "ibo": (10192, 1841, 3682),
    "kin": (3302, 827, 1026),
    "swa": (1810, 453, 748),
    "yor": (8522, 2090, 4515),
    "pcm": (5121, 1281, 4154),
}
FILES = [(lang, split, n) for lang, ns in COUNTS.items() for split, n in zip(("train", "dev", "test"), ns)]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the user's data folder or cache."""
    monkeypatch.delenv("AFROCOMET_DATA", raising=False)
    monkeypatch.setenv("AFROCOMET_CACHE", str(tmp_path / "default-cache"))


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def dead_url() -> str:
    """A 127.0.0.1 URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- the real files -------------------------------------------------------------------------------


@pytest.mark.parametrize("lang,split,n", FILES, ids=[f"{l}-{s}" for l, s, _ in FILES])
def test_real_files_parse_with_documented_counts(afrisenti_dir, lang, split, n):
    examples = read_tsv(afrisenti_dir / lang / f"{split}.tsv")
    assert len(examples) == n
    assert {ex.label for ex in examples} == set(LABELS)
    assert examples[0].line == 2 and examples[-1].line == n + 1
    assert all(ex.text.strip() and ex.id is None for ex in examples)


def test_real_data_matches_pinned_sums_and_loads(afrisenti_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert verify_data_dir(afrisenti_dir, ALL_LANGUAGES, strict=True) == []
        data = load_afrisenti(["swa", "kin"], data_dir=afrisenti_dir)
    assert list(data) == ["swa", "kin"]
    assert data["swa"].name == "swa" and data["swa"].labels == LABELS
    assert [len(data["kin"].splits[s]) for s in ("train", "dev", "test")] == list(COUNTS["kin"])
    # Tweets keep their quotes verbatim (QUOTE_NONE).
    assert any('"' in ex.text for ex in data["kin"].splits["train"])


def test_load_afrisenti_rejects_unknown_language_and_split(afrisenti_dir):
    with pytest.raises(AfroCometError, match="unknown language 'xho'.*hau, ibo, kin, swa, yor, pcm"):
        load_afrisenti(["hau", "xho"], data_dir=afrisenti_dir)
    with pytest.raises(AfroCometError, match="unknown split"):
        load_afrisenti("swa", data_dir=afrisenti_dir, splits=("train", "valid"))
    assert list(load_afrisenti("swa", data_dir=afrisenti_dir, splits=("dev",))["swa"].splits) == ["dev"]


# --- strict parsing --------------------------------------------------------------------------------


def test_read_tsv_good_file_with_quirks(tmp_path):
    # BOM, CRLF endings, quotes, a trailing blank line: all fine.
    f = write(tmp_path / "a.tsv", '\ufefftweet\tlabel\r\n"quoted tweet\tpositive\r\nit\'s ok\tneutral\r\n\r\n')
    examples = read_tsv(f)
    assert [(ex.text, ex.label, ex.line) for ex in examples] == [
        ('"quoted tweet', "positive", 2),
        ("it's ok", "neutral", 3),
    ]
    assert examples[0] == Example('"quoted tweet', "positive", None, str(f), 2)


def test_read_tsv_id_and_text_columns_and_no_label(tmp_path):
    f = write(tmp_path / "a.tsv", "ID\ttext\nx1\thello\nx2\tworld\n")
    examples = read_tsv(f, require_label=False)
    assert [(ex.id, ex.text, ex.label) for ex in examples] == [("x1", "hello", None), ("x2", "world", None)]
    with pytest.raises(AfroCometError, match=r"a\.tsv:1: header has no 'label' column.*'ID', 'text'"):
        read_tsv(f)


BAD_FILES = [
    # (content, line, message pattern)
    (b"", None, "file is empty"),
    (b"\n\n", None, "file is empty"),
    (b"words\tlabel\nhi\tpositive\n", 1, r"no text column \('tweet' or 'text'\).*'words', 'label'"),
    (b"tweet\tlabel\ttweet\nhi\tpositive\tx\n", 1, "repeats column"),
    (b"tweet\tlabel\nhi\tpositive\nhi there\tneutral\textra\n", 3, "expected 2 columns, got 3"),
    (b"tweet\tlabel\nhi\tpositive\nno label\n", 3, "expected 2 columns, got 1"),
    (b"tweet\tlabel\nhi\tpositive\nhi\tPositive\n", 3, "unknown label 'Positive'; allowed: negative, neutral, positive"),
    (b"tweet\tlabel\nhi\tpositive\n\tnegative\n", 3, "empty text"),
    (b"tweet\tlabel\nhi\tpositive\n   \tnegative\n", 3, "empty text"),
    (b"tweet\tlabel\nhi\t\n", 2, "empty label"),
    (b"tweet\tlabel\nhi\tpositive\nok\tneutral\ncaf\xe9\tneutral\n", 4, r"not valid UTF-8: byte 0xe9 at byte offset 38 \(byte 4 of the line\)"),
    (b"tweet\tlabel\nhi\tpositive\n\nok\tneutral\n", 3, "blank line"),
    (b"tweet\tlabel\nhi\tpositive\n \t \nok\tneutral\n", 3, "blank line"),
    (b"tweet\tlabel\nhi\rthere\tpositive\n", 2, "cannot parse line"),
    (b"tweet\tlabel\n", None, "header but no rows"),
    (b"ID\ttweet\tlabel\n1\thi\tpositive\n2\tyo\tneutral\n1\tok\tnegative\n", 4, "duplicate ID '1' \\(first on line 2\\)"),
]


@pytest.mark.parametrize("content,line,pattern", BAD_FILES, ids=[f"bad{i}" for i in range(len(BAD_FILES))])
def test_read_tsv_bad_input(tmp_path, content, line, pattern):
    f = write(tmp_path / "bad.tsv", content)
    with pytest.raises(AfroCometError, match=pattern) as info:
        read_tsv(f)
    where = f"{f}:{line}: " if line is not None else f"{f}: "
    assert str(info.value).startswith(where), str(info.value)
    assert info.value.line == line and info.value.path == str(f)
    assert "\n" not in str(info.value)


def test_read_tsv_missing_file_lists_folder(tmp_path):
    write(tmp_path / "hau" / "train.tsv", "tweet\tlabel\nhi\tpositive\n")
    with pytest.raises(AfroCometError, match=r"test\.tsv: file not found; .*hau holds: train\.tsv"):
        read_tsv(tmp_path / "hau" / "test.tsv")
    with pytest.raises(AfroCometError, match="folder .*nope does not exist"):
        read_tsv(tmp_path / "nope" / "train.tsv")
    with pytest.raises(AfroCometError, match="is a folder"):
        read_tsv(tmp_path / "hau")


def test_check_label_sets_names_files_and_labels(tmp_path):
    def rows(path, labels):
        return [Example("t", lab, None, path, i + 2) for i, lab in enumerate(labels)]

    ok = Dataset("x", {"train": rows("tr.tsv", LABELS), "test": rows("te.tsv", LABELS[::-1])})
    check_label_sets({"x": ok})
    bad = Dataset("x", {"train": rows("tr.tsv", LABELS), "test": rows("te.tsv", ["negative", "positive"])})
    with pytest.raises(AfroCometError, match=r"tr\.tsv and te\.tsv: only in train: neutral; only in test: -"):
        check_label_sets([bad])
    dev_extra = Dataset("x", {"train": rows("tr.tsv", ["negative", "positive"]), "dev": rows("dv.tsv", LABELS)})
    with pytest.raises(AfroCometError, match="only in dev: neutral"):
        check_label_sets(dev_extra)


# --- data-dir resolution ---------------------------------------------------------------------------


def make_data_dir(root: Path, src: Path, langs=("swa",)) -> Path:
    """A writable copy of some languages (the shared originals are read-only)."""
    for lang in langs:
        (root / lang).mkdir(parents=True)
        for split in ("train", "dev", "test"):
            shutil.copyfile(src / lang / f"{split}.tsv", root / lang / f"{split}.tsv")
    return root


def test_resolution_flag_beats_env_beats_cache(afrisenti_dir, tmp_path, monkeypatch):
    flag = make_data_dir(tmp_path / "flag", afrisenti_dir)
    env = make_data_dir(tmp_path / "env", afrisenti_dir)
    cache = make_data_dir(tmp_path / "cache", afrisenti_dir)
    monkeypatch.setenv("AFROCOMET_DATA", str(env))
    kw = dict(languages=["swa"], cache_dir=cache, base_url=dead_url())
    assert resolve_data_dir(flag, **kw) == flag
    assert resolve_data_dir(None, **kw) == env
    monkeypatch.setenv("AFROCOMET_DATA", "")  # empty means unset
    assert resolve_data_dir(None, **kw) == cache  # complete cache: no network needed


def test_default_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AFROCOMET_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "afrisenti" / UPSTREAM_COMMIT
    monkeypatch.delenv("AFROCOMET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "afrocomet" / "afrisenti" / UPSTREAM_COMMIT
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "afrocomet" / "afrisenti" / UPSTREAM_COMMIT


def test_explicit_dir_without_language_lists_what_exists(tmp_path, monkeypatch):
    (tmp_path / "d" / "hau").mkdir(parents=True)
    (tmp_path / "d" / "yor").mkdir()
    with pytest.raises(AfroCometError, match=r"--data-dir\) has no folder for swa; it has language folders: hau, yor"):
        resolve_data_dir(tmp_path / "d", languages=["hau", "swa"])
    monkeypatch.setenv("AFROCOMET_DATA", str(tmp_path / "missing"))
    with pytest.raises(AfroCometError, match=r"AFROCOMET_DATA\) does not exist"):
        resolve_data_dir(languages=["hau"])


def test_user_copy_that_differs_is_warned_or_strict_error(afrisenti_dir, tmp_path):
    d = make_data_dir(tmp_path / "d", afrisenti_dir)
    with open(d / "swa" / "dev.tsv", "a", encoding="utf-8") as fh:
        fh.write("mpya\tpositive\n")
    with pytest.warns(UserWarning, match=r"differ from AfriSenti.*swa/dev\.tsv"):
        assert resolve_data_dir(d, languages=["swa"]) == d
    with pytest.raises(AfroCometError, match=r"swa/dev\.tsv"):
        verify_data_dir(d, ["swa"], strict=True)


def test_no_download_and_empty_cache_is_an_error(tmp_path):
    with pytest.raises(AfroCometError, match="downloading is off; pass --data-dir"):
        resolve_data_dir(languages=["swa"], download=False, cache_dir=tmp_path / "c")


# --- download against a local server ---------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def upstream(afrisenti_dir, tmp_path):
    """A local copy of upstream (swa, kin) served over HTTP as <commit>/data/<lang>/<split>.tsv."""
    root = tmp_path / "upstream"
    make_data_dir(root / UPSTREAM_COMMIT / "data", afrisenti_dir, ("swa", "kin"))
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root / UPSTREAM_COMMIT / "data", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_into_cache_then_reuse(upstream, tmp_path):
    _, url = upstream
    cache = tmp_path / "cache"
    assert resolve_data_dir(languages=["swa", "kin"], base_url=url, cache_dir=cache) == cache
    for rel in ("swa/train.tsv", "kin/test.tsv"):
        assert hashlib.sha256((cache / rel).read_bytes()).hexdigest() == PINNED_SHA256[rel]
    assert not list(cache.rglob("*.tmp"))
    # Second time the cache is complete: the (now dead) server is not needed.
    assert resolve_data_dir(languages=["kin"], base_url=dead_url(), cache_dir=cache) == cache


def test_download_bad_checksum_writes_nothing(upstream, tmp_path):
    served, url = upstream
    with open(served / "swa" / "train.tsv", "ab") as fh:
        fh.write(b"tampered\tpositive\n")
    cache = tmp_path / "cache"
    with pytest.raises(AfroCometError, match=r"checksum mismatch for http://127\.0\.0\.1:\d+/.*/data/swa/train\.tsv") as info:
        resolve_data_dir(languages=["kin", "swa"], base_url=url, cache_dir=cache)
    assert PINNED_SHA256["swa/train.tsv"] in str(info.value)
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


def test_download_unreachable_or_missing(upstream, tmp_path):
    _, url = upstream
    bad = dead_url()
    with pytest.raises(AfroCometError, match=rf"could not download {bad}/.*swa/train\.tsv.*--data-dir.*AFROCOMET_DATA"):
        resolve_data_dir(languages=["swa"], base_url=bad, cache_dir=tmp_path / "c")
    with pytest.raises(AfroCometError, match=r"hau/train\.tsv \(HTTP 404"):
        resolve_data_dir(languages=["hau"], base_url=url, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


# --- the user's own data ---------------------------------------------------------------------------


def test_custom_folder_with_id_and_text_columns_carves_dev(tmp_path, caplog):
    rows = "".join(f"r{i}\ttext number {i}\t{'yes' if i % 2 else 'no'}\n" for i in range(30))
    write(tmp_path / "task" / "train.tsv", "ID\ttext\tlabel\n" + rows)
    write(tmp_path / "task" / "test.tsv", "ID\ttext\tlabel\nt1\thello\tyes\n")
    with caplog.at_level(logging.INFO, logger="afrocomet.data.afrisenti"):
        ds = load_custom(folder=tmp_path / "task", name="mine")
    assert ds.name == "mine" and ds.labels == ("no", "yes")
    assert (len(ds.splits["train"]), len(ds.splits["dev"]), len(ds.splits["test"])) == (27, 3, 1)
    assert "no dev file, using 3 of 30 train rows" in caplog.text
    ids = [ex.id for ex in ds.splits["train"] + ds.splits["dev"]]
    assert sorted(ids) == sorted(f"r{i}" for i in range(30))
    assert [ex.line for ex in ds.splits["train"]] == sorted(ex.line for ex in ds.splits["train"])
    again = load_custom(folder=tmp_path / "task")
    assert [ex.id for ex in again.splits["dev"]] == [ex.id for ex in ds.splits["dev"]]  # deterministic
    assert ds.label_ids("test") == [1]


def test_custom_files_labels(tmp_path):
    train = write(tmp_path / "tr.tsv", "tweet\tlabel\na\tpositive\nb\tnegative\nc\tneutral\n")
    dev = write(tmp_path / "dv.tsv", "tweet\tlabel\nd\tneutral\n")
    test = write(tmp_path / "te.tsv", "tweet\tlabel\ne\tpositive\nf\tmixed\n")
    with pytest.raises(AfroCometError, match=r"te\.tsv:3: label 'mixed' does not occur in train"):
        load_custom(train, dev, test)
    write(test, "tweet\tlabel\ne\tpositive\n")
    ds = load_custom(train, dev, test)
    assert ds.labels == LABELS and len(ds.splits["dev"]) == 1
    with pytest.raises(AfroCometError, match="needs at least a train and a test"):
        load_custom(train=train)
    with pytest.raises(AfroCometError, match=r"train\.tsv: file not found.*holds: dv\.tsv, te\.tsv, tr\.tsv"):
        load_custom(folder=tmp_path)
