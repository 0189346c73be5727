"""How a fetch enters a span of an ordinary gzip layer: with what the span needs before it.

A span (a frame of a span table, chunktable.py) inflates only with the data
before it, as much of it as its checkpoint's window length says. There are
three places to get it, cheapest first: the span just inflated by the same
fetch, the layer's own bytes the cache already holds before the span
(verified when they were stored), or the span's window in the index's
window blob, fetched and checked against its sha256. The first span of a
fetch asks ahead: its window is fetched on another thread while the span's
own bytes are (a second request in flight, not a second wait).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

from ..erofs.chunktable import ChunkTable
from ..pools import process_pool

BESIDE_THREADS = 4  # windows fetched while their spans are


class SpanWindows:
    """The windows of one span table. ``held(offset, length)``: those bytes of the
    layer if the cache holds them, else None; ``fetch(digest, offset, length)``:
    bytes of a stored blob, counted as fetched."""

    def __init__(self, table: ChunkTable, windows_digest: str,
                 held: Callable[[int, int], bytes | None],
                 fetch: Callable[[str, int, int], bytes]) -> None:
        self.table = table
        self.windows_digest = windows_digest
        self._held = held
        self._fetch = fetch

    def ahead(self, index: int, *, local: bool) -> Future[bytes] | None:
        """The window of span ``index`` on its way, when the first span of a fetch needs
        one it must fetch (None: ``before`` will not fetch)."""
        need = self.table.checkpoints[index].window_length
        if not need or (local and self._held_before(index, need) is not None):
            return None
        beside = process_pool("erofsd-beside", BESIDE_THREADS)
        return beside.submit(self.before, index, b"", local=local)

    def before(self, index: int, decoded: bytes, *, local: bool) -> bytes:
        """What span ``index`` needs of the data before it: ``decoded`` (the span before
        it, just inflated) when that is enough, or (``local``) the bytes the cache holds,
        or else its window from the window blob, verified."""
        point = self.table.checkpoints[index]
        if len(decoded) >= point.window_length:
            return decoded
        if local:
            held = self._held_before(index, point.window_length)
            if held is not None:
                return held
        stored = self._fetch(self.windows_digest, point.window_offset,
                             point.window_stored_length)
        return self.table.open_window(index, stored)

    def _held_before(self, index: int, need: int) -> bytes | None:
        offset = self.table.frames[index].offset
        return self._held(offset - need, need)
