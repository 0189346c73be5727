"""Filling blobs whole ahead of a reader that will read everything, or of no reader."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..erofs.readat import ReadAt
from .blob import CachedBlob

FILL_STREAMS = 2  # requests in flight while a whole read fills ahead of its reader


class BackgroundFill:
    """Threads that fetch the cached ones of ``blobs`` whole, in order, until every
    frame is present or ``stop`` (other blobs are ignored). For a reader about
    to read everything (``with BackgroundFill(blobs): ...``), and for a mount
    asked to prefetch its image."""

    def __init__(self, blobs: Sequence[ReadAt], streams: int = FILL_STREAMS) -> None:
        self._stop = threading.Event()
        cached = [b for b in blobs if isinstance(b, CachedBlob)]
        self._threads = [threading.Thread(target=self._run, args=(cached,), daemon=True,
                                          name=f"erofsd-fill-{n}")
                         for n in range(streams if cached else 0)]
        for thread in self._threads:
            thread.start()

    def _run(self, blobs: Sequence[CachedBlob]) -> None:
        for blob in blobs:
            blob.fill(self._stop)

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def stop(self) -> None:
        """Stop and wait (for at most the requests in flight)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> BackgroundFill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
