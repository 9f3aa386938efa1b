"""Tables on the terminal (rich), the one way the commands print rows."""

from __future__ import annotations

_LEFT = ("name", "system", "language", "description", "metric")


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in _LEFT else "right")
    for row in rows:
        table.add_row(*[str(c) for c in row])
    Console().print(table)
