"""Keeping stderr to afrocomet's own lines.

Warnings: `warn(msg)` raises an `AfroCometWarning` (a Python warning, so a library user can
filter or record it). Under the CLI (`cli_output()`, entered once by `cli.main`), every warning
afrocomet gives, by `warn` or by a WARNING record of an `afrocomet*` logger, is one line on
stderr, `afrocomet: warning: <what>`, and the noise of the libraries underneath (their Python
warnings; the log records of transformers, accelerate, huggingface_hub, onnxruntime, torch) is
hidden unless `setup(verbose=True)` (the `--verbose` flag), and so are their progress bars. Outside the
CLI, progress bars are off while we load models (`no_progress_bars`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Iterator

PREFIX = "afrocomet: warning: "
LIBRARY_LOGGERS = ("transformers", "accelerate", "huggingface_hub", "onnxruntime", "torch", "urllib3", "uvicorn")
# transformers and huggingface_hub set their own levels from these when they are first imported
# (huggingface_hub's retries without a network are a WARNING line each); torch's C++ side reads
# TORCH_CPP_LOG_LEVEL when it loads, so it reaches the processes `--num-processes` starts (DDP's
# reducer writes its own `[rank0]:[W...] Warning:` lines there).
LIBRARY_ENV = {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
               "HF_HUB_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TORCH_CPP_LOG_LEVEL": "ERROR"}
_DATEFMT = "%H:%M:%S"


class AfroCometWarning(UserWarning):
    """A warning of afrocomet's own (the CLI prints it as one `afrocomet: warning:` line)."""


def one_line(message: object) -> str:
    """`message` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(message).split())


def warn(message: str) -> None:
    """Warn the user once about `message` (one line under the CLI)."""
    warnings.warn(one_line(message), AfroCometWarning, stacklevel=2)


class _Formatter(logging.Formatter):
    """afrocomet's log records: warnings as `afrocomet: warning: ...`, the rest as `HH:MM:SS message`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt=_DATEFMT)

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return PREFIX + one_line(record.getMessage())
        return super().format(record)


class _State:
    active = False
    verbose = False


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning under the CLI: ours as one line; the libraries' only when verbose."""
    stream = file or sys.stderr
    if issubclass(category, AfroCometWarning):
        text = PREFIX + one_line(message) + "\n"
    elif _State.verbose:
        text = warnings.formatwarning(message, category, filename, lineno, line)
    else:
        return
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # stderr closed: nowhere to say it
        pass


def cli_state() -> tuple[bool, bool]:
    """(inside `cli_output`, verbose): what a worker process (run.jobs) sets up the same way."""
    return _State.active, _State.verbose


def setup(verbose: bool = False) -> None:
    """Inside `cli_output`: show the libraries' warnings and log records (`verbose`) or hide them.
    Outside it, nothing changes (a program that imports afrocomet keeps its own settings)."""
    if not _State.active:
        return
    _State.verbose = verbose
    level = logging.NOTSET if verbose else logging.ERROR
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for name, value in LIBRARY_ENV.items():
        if verbose:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "transformers" in sys.modules:  # already imported: its level was read from the environment
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(logging.WARNING if verbose else logging.ERROR)
        # transformers 5 draws a "Loading weights" bar for every load, wherever it happens
        if not verbose:
            hf_logging.disable_progress_bar()


@contextlib.contextmanager
def cli_output(verbose: bool = False) -> Iterator[None]:
    """Route warnings as described above while the CLI runs; put back on exit, except the libraries'
    log levels (see the end)."""
    logger = logging.getLogger("afrocomet")
    handler = logging.StreamHandler()  # sys.stderr as it is when the CLI starts
    handler.setFormatter(_Formatter())
    saved_env = {name: os.environ.get(name) for name in LIBRARY_ENV}
    saved = (warnings.showwarning, logger.propagate, _State.active, _State.verbose)
    with warnings.catch_warnings():
        warnings.simplefilter("default", AfroCometWarning)  # each distinct warning once
        warnings.showwarning = _show
        logger.addHandler(handler)
        logger.propagate = False  # the run's root handler would print our records a second time
        _State.active = True
        setup(verbose)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            warnings.showwarning, logger.propagate, _State.active, _State.verbose = saved
            # The libraries' log levels stay as they are: the process ends right after the CLI,
            # and exit handlers log too (torch's FakeTensor cache statistics, at INFO).
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers 5 draws a "Loading weights" bar on stderr for every load; keep stderr to our lines."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
