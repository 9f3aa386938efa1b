"""afrocomet's exception types.

Every error a user can act on (bad file, bad config, missing model, ...) is raised as
`AfroCometError` with a one-line message naming the file, the line and the problem.
The CLI prints it as one line and exits with code 2. A broken internal contract (a loss given
tensors of the wrong shapes, a matcher used outside its capture) is an `InternalError`: a bug,
not the user's input, so the CLI lets its traceback show.
"""

from __future__ import annotations

from pathlib import Path


class AfroCometError(Exception):
    """A user-facing error: one line, names what is wrong and where."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        # One line only: newlines in a message would break the CLI's contract.
        text = (where + message).replace("\r", " ").replace("\n", " ")
        super().__init__(text)
        self.path = None if path is None else str(path)
        self.line = line


class InternalError(RuntimeError):
    """A bug in afrocomet, or in code calling its functions the wrong way: never the user's input.
    The CLI does not turn it into a one-line error; its traceback is what a bug report needs."""
