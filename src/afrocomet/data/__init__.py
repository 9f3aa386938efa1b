"""Data: AfriSenti (find, download, verify, parse), unlabelled corpora, batching."""

from afrocomet.data.afrisenti import check_label_sets, load_afrisenti, load_custom, read_tsv
from afrocomet.data.download import (
    PINNED_SHA256,
    UPSTREAM_BASE_URL,
    UPSTREAM_COMMIT,
    cache_root,
    default_cache_dir,
    download_afrisenti,
    resolve_data_dir,
    verify_data_dir,
)
from afrocomet.data.schema import (
    ALL_LANGUAGES,
    DEFAULT_LANGUAGES,
    LABELS,
    LANGUAGE_NAMES,
    SPLITS,
    Dataset,
    Example,
)

__all__ = [
    "ALL_LANGUAGES",
    "DEFAULT_LANGUAGES",
    "LABELS",
    "LANGUAGE_NAMES",
    "PINNED_SHA256",
    "SPLITS",
    "UPSTREAM_BASE_URL",
    "UPSTREAM_COMMIT",
    "Dataset",
    "Example",
    "cache_root",
    "check_label_sets",
    "default_cache_dir",
    "download_afrisenti",
    "load_afrisenti",
    "load_custom",
    "read_tsv",
    "resolve_data_dir",
    "verify_data_dir",
]
