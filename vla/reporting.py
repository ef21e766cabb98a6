"""Small console reports: every long job ends with a table of its figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _console() -> Console:
    # Logs are not terminals: rich would wrap tables at 80 columns there, which makes them unreadable.
    console = Console()
    return console if console.is_terminal else Console(width=200)


def print_table(title: str, rows: Mapping[str, Any]) -> None:
    """Two-column table of named figures."""
    table = Table(title=title, show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        table.add_row(str(key), str(value))
    _console().print(table)


def print_grid(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Table with a header row, e.g. one row per task or per method."""
    table = Table(title=title)
    for h in header:
        table.add_column(str(h), justify="right" if h != header[0] else "left")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    _console().print(table)


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Lay out a matplotlib figure, write it to ``path`` (creating its folder) and close it: a long job that
    draws many figures would otherwise keep every one in memory."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out

