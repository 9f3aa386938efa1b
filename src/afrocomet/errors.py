"""The one exception type of afrocomet.

Every error a user can act on (bad file, bad config, missing model, ...) is raised as
`AfroCometError` with a one-line message naming the file, the line and the problem.
The CLI prints it as one line and exits with code 2.
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
