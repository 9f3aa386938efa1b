"""Where the AfriSenti files come from: a folder the user names, the cache, or the pinned upstream.

Resolution order (first match wins):
  1. an explicit folder (the CLI's `--data-dir`),
  2. the environment variable `AFROCOMET_DATA`,
  3. the user cache (`$AFROCOMET_CACHE/afrisenti/<commit>`, else
     `$XDG_CACHE_HOME/afrocomet/afrisenti/<commit>`, else `~/.cache/afrocomet/afrisenti/<commit>`),
  4. a download of the pinned upstream commit into that cache, checked against `PINNED_SHA256`.

Every folder has the layout `<dir>/<lang>/<split>.tsv`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Sequence

from afrocomet.data.schema import ALL_LANGUAGES, DEFAULT_LANGUAGES, SPLITS
from afrocomet.errors import AfroCometError
from afrocomet.io import atomic_write_bytes
from afrocomet.quiet import warn

logger = logging.getLogger(__name__)

UPSTREAM_REPO = "afrisenti-semeval/afrisent-semeval-2023"
UPSTREAM_COMMIT = "5aec3cfcf87b59f885e98641f72e52182776429d"
UPSTREAM_BASE_URL = f"https://raw.githubusercontent.com/{UPSTREAM_REPO}"
DATA_ENV = "AFROCOMET_DATA"
CACHE_ENV = "AFROCOMET_CACHE"
DOWNLOAD_TIMEOUT_S = 60.0

# sha256 of every file at UPSTREAM_COMMIT, keyed "<lang>/<split>.tsv".
PINNED_SHA256: dict[str, str] = {
    "hau/dev.tsv": "6f895e66fb732b45fad926315841c41da8fc03dde2aef3a5386183bdcf15221b",
    "hau/test.tsv": "29b2193808935c459e323b4434f9d1e1968883eed273617f43510b7127a3fa0a",
    "hau/train.tsv": "0a125f4528d1ae86b112ec5d3d66312fcb154883a5a021c6ab913cd2ce877d87",
    "ibo/dev.tsv": "a52e7248af999b65a7d49e11d781b08c2528411ef25d8b9419c7e6280622e8f8",
    "ibo/test.tsv": "b91481b377e96b394b96e04dd2577c335fe117e03271dcbf0f4da2a7b785b92f",
    "ibo/train.tsv": "6f0fb58fbaff2401d8944d41bae53cc7dafe1ccae7de42a81915ddc974abb300",
    "kin/dev.tsv": "b7e762056fbaa89f642f3f47c25f631950873c67fe24bb17528a930f4eb60031",
    "kin/test.tsv": "b3656d35cf543750d3d481c1088248117f3f908d1fb6e5ae73795c62bd407e37",
    "kin/train.tsv": "49aa49824b6baee98357ec7687e4ff8f41aa47d041f0587bca560eba1ba9ddc2",
    "pcm/dev.tsv": "d7635a8b2b41f02c96f5edb3b8694ba2ec2dcf2e4bfc01eee169d70dd1603c71",
    "pcm/test.tsv": "35e94e674b8642f5ee4b2cff32fca9b29821ee8d243ae2b177049a82ae95a4b0",
    "pcm/train.tsv": "87622392d18358005b046a5f01a966d6c4f96635cdda2a6e6a212ba5b7580647",
    "swa/dev.tsv": "ef91098b77b5137e093fb78d7a0cc3bd4c561ba1f87dc86fdccbc16b4807f2af",
    "swa/test.tsv": "1720b2a4dedce37e64b5820420a5de78caf66eaf2102f9cf276faba3a8261eb1",
    "swa/train.tsv": "d0cd654eeb84dae25e3fe8521ac88a1004cdd625e0fe90e7ab9a039a6655e431",
    "yor/dev.tsv": "1a48880716ef3e697b1ce9bcde6a3c63d9f59afb7fe217fc882cf2e330e60100",
    "yor/test.tsv": "e323bfea0c888675e8b3e51413e9e4612ead674fc3d9d3a8c5485175adf88e1e",
    "yor/train.tsv": "2ef112428030c5b209178b8fdb479f83152c75dcd9279726937968e9093270b0",
}

_NO_NETWORK_HINT = (
    "without internet, fetch the files yourself and pass --data-dir DIR "
    f"or set {DATA_ENV}=DIR (layout DIR/<lang>/<split>.tsv)"
)


def check_languages(languages: str | Iterable[str]) -> tuple[str, ...]:
    """Validate language codes; a single string is one language. Duplicates are dropped."""
    if isinstance(languages, str):
        languages = [languages]
    out = tuple(dict.fromkeys(lang.strip().lower() for lang in languages))
    if not out:
        raise AfroCometError(f"no language given; choose from {', '.join(ALL_LANGUAGES)}")
    unknown = [lang for lang in out if lang not in ALL_LANGUAGES]
    if unknown:
        raise AfroCometError(
            f"unknown language {', '.join(map(repr, unknown))}; choose from {', '.join(ALL_LANGUAGES)}"
        )
    return out


def cache_root() -> Path:
    """The afrocomet cache folder: $AFROCOMET_CACHE, else $XDG_CACHE_HOME/afrocomet, else ~/.cache/afrocomet."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "afrocomet"


def default_cache_dir() -> Path:
    """Where downloaded AfriSenti files live: <cache root>/afrisenti/<commit>."""
    return cache_root() / "afrisenti" / UPSTREAM_COMMIT


def data_files_in_use(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """The AfriSenti files a command may read, as ("AfriSenti file", path): every <lang>/<split>.tsv
    of the folder it would use (`data_dir`, else $AFROCOMET_DATA, else the cache), found without
    reading or downloading anything. An output must not be, nor contain, any of them
    (`afrocomet.outputs`); a run folder beside them in the same folder is fine."""
    value = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    folder = Path(value).expanduser() if value is not None else default_cache_dir()
    return [("AfriSenti file", folder / lang / f"{split}.tsv") for lang in ALL_LANGUAGES for split in SPLITS]


def upstream_url(lang: str, split: str, base_url: str = UPSTREAM_BASE_URL) -> str:
    return f"{base_url.rstrip('/')}/{UPSTREAM_COMMIT}/data/{lang}/{split}.tsv"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(languages: Sequence[str], splits: Sequence[str] = SPLITS) -> list[str]:
    return [f"{lang}/{split}.tsv" for lang in languages for split in splits]


def verify_data_dir(
    path: str | Path, languages: Iterable[str] = DEFAULT_LANGUAGES, *, strict: bool = False
) -> list[str]:
    """Compare the AfriSenti files present under `path` with the pinned sums.

    Returns the mismatching files (relative names). A mismatch is a warning (a user may keep
    their own edited copy), or an AfroCometError if `strict`. Missing files are not checked here.
    """
    path = Path(path)
    bad = []
    for rel in _files(check_languages(languages)):
        file = path / rel
        if file.is_file() and sha256_file(file) != PINNED_SHA256[rel]:
            bad.append(rel)
    if bad:
        msg = (
            f"{len(bad)} file(s) differ from AfriSenti at commit {UPSTREAM_COMMIT[:12]}: {', '.join(bad)}; "
            "results will not be comparable with the official data"
        )
        if strict:
            raise AfroCometError(msg, path=path)
        warn(f"{path}: {msg}")
    return bad


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = str(exc.reason)
    except (TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
    raise AfroCometError(f"could not download {url} ({reason}); {_NO_NETWORK_HINT}")


def download_afrisenti(
    dest: str | Path,
    languages: Iterable[str] = DEFAULT_LANGUAGES,
    *,
    base_url: str = UPSTREAM_BASE_URL,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    only_missing: bool = True,
) -> Path:
    """Download the pinned files of `languages` into `dest/<lang>/<split>.tsv`.

    All files are fetched and checked before any is written, so a bad checksum leaves `dest`
    as it was; each file is then written atomically.
    """
    dest = Path(dest)
    todo = [rel for rel in _files(check_languages(languages)) if not (only_missing and _is_good(dest / rel, rel))]
    fetched: dict[str, bytes] = {}
    for rel in todo:
        lang, split = rel[:-4].split("/")
        url = upstream_url(lang, split, base_url)
        logger.info("downloading %s", url)
        data = _fetch(url, timeout)
        got = hashlib.sha256(data).hexdigest()
        if got != PINNED_SHA256[rel]:
            raise AfroCometError(
                f"checksum mismatch for {url}: expected sha256 {PINNED_SHA256[rel]}, got {got}; "
                f"nothing was written to {dest}"
            )
        fetched[rel] = data
    for rel, data in fetched.items():
        atomic_write_bytes(dest / rel, data)
    return dest


def _is_good(file: Path, rel: str) -> bool:
    return file.is_file() and sha256_file(file) == PINNED_SHA256[rel]


def _check_layout(path: Path, languages: Sequence[str], origin: str) -> None:
    """A user-named folder must exist and hold one folder per requested language."""
    if not path.is_dir():
        raise AfroCometError(f"data folder ({origin}) does not exist or is not a folder", path=path)
    missing = [lang for lang in languages if not (path / lang).is_dir()]
    if not missing:
        return
    present = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name in ALL_LANGUAGES)
    have = f"it has language folders: {', '.join(present)}" if present else "it has no language folders"
    hint = ""
    if (path / "data" / missing[0]).is_dir():
        hint = f"; did you mean {path / 'data'}?"
    raise AfroCometError(
        f"data folder ({origin}) has no folder for {', '.join(missing)}; {have} "
        f"(expected layout <dir>/<lang>/<split>.tsv){hint}",
        path=path,
    )


def resolve_data_dir(
    data_dir: str | Path | None = None,
    *,
    languages: Iterable[str] = DEFAULT_LANGUAGES,
    download: bool = True,
    base_url: str = UPSTREAM_BASE_URL,
    cache_dir: str | Path | None = None,
) -> Path:
    """Find the folder holding AfriSenti: `data_dir`, then $AFROCOMET_DATA, then the cache, then download.

    `cache_dir` overrides the cache folder itself (the one holding <lang>/<split>.tsv).
    A user-named folder is checked against the pinned sums and only warned about on mismatch.
    """
    languages = check_languages(languages)
    for value, origin in ((data_dir, "--data-dir"), (os.environ.get(DATA_ENV) or None, f"${DATA_ENV}")):
        if value is not None:
            path = Path(value).expanduser()
            _check_layout(path, languages, origin)
            verify_data_dir(path, languages)
            return path
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    missing = [rel for rel in _files(languages) if not _is_good(cache / rel, rel)]
    if not missing:
        return cache
    if not download:
        raise AfroCometError(
            f"AfriSenti files not in the cache ({', '.join(missing)}) and downloading is off; "
            f"pass --data-dir DIR or set {DATA_ENV}=DIR",
            path=cache,
        )
    return download_afrisenti(cache, languages, base_url=base_url)
