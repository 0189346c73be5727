"""A progress bar for long work, shown only on a terminal and never under --quiet."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class Bar:
    """Call it with a byte count to advance; ``set_total`` when the total is learnt late."""

    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def __call__(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, quiet: bool = False
                 ) -> Iterator[Bar | None]:
    """Yields a Bar, or None when there is no bar (quiet, nothing to do, not a terminal)."""
    if quiet or (total is not None and total <= 0) or not sys.stdout.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), transient=True) as progress:
        yield Bar(progress, progress.add_task(description, total=total))
