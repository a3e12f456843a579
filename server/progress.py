"""The progress bar of the commands that move many rows (import, export): rows done of all,
rows per second, rows failed, elapsed time and time remaining, drawn on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RowRate(ProgressColumn):
    """Rows per second, from the bar's own recent samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s")


def rows_progress(console: Console) -> Progress:
    """A bar for tasks added with a ``failed`` field (rows refused so far)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RowRate(),
        TextColumn("{task.fields[failed]:,} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def stderr_console() -> Console:
    return Console(stderr=True)
