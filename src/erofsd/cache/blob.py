"""One cached blob (a cookie's object): lazy, verified, shared, accounted.

``read_at`` serves the kernel-visible blob (the data before the chunk
table). Missing chunks are fetched from the sources, each verified
against its sha256 from the chunk table, written, and only then marked
present. Within a process, concurrent misses on a chunk make one fetch
(single flight); across processes, byte-range locks on the present map
do the same. Adjacent misses merge into one request up to
``merge_limit``, and a readahead window can extend a miss forward.

A write error (ENOSPC, EIO) fails the read with a CacheError that names
the cause, marks nothing, and leaves the cache usable. A source that lies
is retried, then the read fails with IntegrityError: a wrong byte is never
returned and never stored.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from ..erofs.chunktable import ChunkTable
from ..erofs.readat import pwrite_all
from ..errors import CacheError, ErofsdError, IntegrityError, NoSpace, SourceError
from ..oci.image import BlobRef
from ..oci.source import BlobSource
from .presentmap import PresentMap, current_boot_id

log = logging.getLogger("erofsd.cache")

VERIFY_ATTEMPTS = 4
STREAMS = 16  # sequential readers tracked per blob for readahead


@dataclasses.dataclass
class CacheTuning:
    merge_limit: int = 4 << 20  # largest single request made of adjacent misses
    # Extra bytes fetched after a miss that continues the previous fetch
    # (sequential reading); a random miss fetches only what it needs. 0: off.
    readahead: int = 1 << 20


@dataclasses.dataclass
class CookieStats:
    read_bytes: int = 0
    fetched_bytes: int = 0  # by this process; the map header keeps the lifetime total
    hits: int = 0
    misses: int = 0
    blocked_seconds: float = 0.0


class CachedBlob:
    def __init__(self, volume: str, ref: BlobRef, data_path: str, data_fd: int,
                 pmap: PresentMap, table: ChunkTable, sources: Sequence[BlobSource],
                 tuning: CacheTuning) -> None:
        self.volume = volume
        self.ref = ref
        self.data_path = data_path  # the sparse file the kernel can use as the blob device
        self.pmap = pmap
        self.table = table
        self.sources = list(sources)
        self.tuning = tuning
        self.stats = CookieStats()
        self._fd = data_fd
        self._lock = threading.Lock()
        self._inflight: dict[int, threading.Event] = {}
        # where the next miss of each recent sequential stream lands (entry after its fetch)
        self._streams: OrderedDict[int, None] = OrderedDict({0: None})
        self.recover_if_rebooted()

    # -- the ReadAt interface -----------------------------------------------

    @property
    def size(self) -> int:
        return self.ref.data_size

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.ref.data_size)
        if offset >= end:
            return b""
        self.ensure_range(offset, end)
        data = os.pread(self._fd, end - offset, offset)
        self.stats.read_bytes += len(data)
        return data

    def ensure_range(self, offset: int, end: int) -> None:
        """Make [offset, end) present without reading it (for kernel data paths)."""
        wanted = self.table.covering(offset, min(end, self.ref.data_size))
        if all(self.pmap.is_present(i) for i in wanted):
            self.stats.hits += 1
            return
        self.stats.misses += 1
        started = time.monotonic()
        try:
            self._ensure(wanted)
        finally:
            self.stats.blocked_seconds += time.monotonic() - started

    @property
    def complete(self) -> bool:
        return all(b for b in self.pmap.bytes)

    @property
    def cached_bytes(self) -> int:
        return self.table.present_bytes(self.pmap.bytes)

    def add_source(self, source: BlobSource) -> None:
        with self._lock:
            if all(s.name != source.name for s in self.sources):
                self.sources.append(source)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.pmap.close()

    # -- fetching -------------------------------------------------------------

    def _ensure(self, wanted: range) -> None:
        while True:
            with self._lock:
                missing = [i for i in wanted if not self.pmap.is_present(i)]
                if not missing:
                    return
                mine = [i for i in missing if i not in self._inflight]
                waits = {self._inflight[i] for i in missing if i in self._inflight}
                if mine:
                    if self._streams.pop(wanted.start, False) is None:  # continues a stream
                        mine += self._readahead(max(wanted.stop, mine[-1] + 1))
                    self._streams[mine[-1] + 1] = None
                    if len(self._streams) > STREAMS:
                        self._streams.popitem(last=False)
                event = threading.Event()
                for i in mine:
                    self._inflight[i] = event
            if mine:
                try:
                    self._fetch(mine)
                finally:
                    with self._lock:
                        for i in mine:
                            del self._inflight[i]
                    event.set()
            for other in waits:
                other.wait()

    def _readahead(self, start: int) -> list[int]:
        extra, budget = [], self.tuning.readahead
        i = start
        entries = self.table.entries
        while budget > 0 and i < len(entries) and not self.pmap.is_present(i) \
                and i not in self._inflight:
            extra.append(i)
            budget -= entries[i].length
            i += 1
        return extra

    def _runs(self, indexes: list[int]) -> list[range]:
        """Consecutive entries grouped into requests of at most merge_limit bytes."""
        runs: list[range] = []
        entries = self.table.entries
        start = prev = indexes[0]
        size = entries[start].length
        for i in indexes[1:]:
            if i == prev + 1 and size + entries[i].length <= self.tuning.merge_limit:
                size += entries[i].length
            else:
                runs.append(range(start, prev + 1))
                start, size = i, entries[i].length
            prev = i
        runs.append(range(start, prev + 1))
        return runs

    def _fetch(self, indexes: list[int]) -> None:
        for run in self._runs(indexes):
            with self.pmap.locked(run.start, run.stop):
                self.pmap.refresh(run.start, run.stop)  # another process may have it now
                todo = [i for i in run if not self.pmap.is_present(i)]
                for attempt in range(VERIFY_ATTEMPTS):
                    if not todo:
                        break
                    todo = self._fetch_verified(todo, attempt)
                if todo:
                    raise IntegrityError(
                        f"blob {self.ref.digest}: chunk at {self.table.entries[todo[0]].offset} "
                        f"failed verification {VERIFY_ATTEMPTS} times; not using those bytes")

    def _fetch_verified(self, todo: list[int], attempt: int) -> list[int]:
        """One fetch of each contiguous group in ``todo``; returns the entries still bad."""
        bad: list[int] = []
        for group in self._runs(todo):
            first, last = self.table.entries[group.start], self.table.entries[group.stop - 1]
            data = self._read_from_sources(first.offset, last.end - first.offset)
            good_start = None
            for i in group:
                entry = self.table.entries[i]
                piece = data[entry.offset - first.offset:entry.end - first.offset]
                if self.table.verify(i, piece):
                    if good_start is None:
                        good_start = i
                    continue
                log.warning("blob %s chunk at %d failed verification (attempt %d); refetching",
                            self.ref.digest, entry.offset, attempt + 1)
                bad.append(i)
                if good_start is not None:
                    self._store(good_start, i, data, first.offset)
                    good_start = None
            if good_start is not None:
                self._store(good_start, group.stop, data, first.offset)
        return bad

    def _store(self, first: int, stop: int, data: bytes, data_start: int) -> None:
        """Write verified chunks [first, stop), then mark them; any failure marks nothing."""
        start, end = self.table.entries[first].offset, self.table.entries[stop - 1].end
        try:
            pwrite_all(self._fd, memoryview(data)[start - data_start:end - data_start], start)
            self.pmap.mark(first, stop)
        except OSError as e:
            log.error("cache write failed for %s in %s at %d: %s", self.ref.digest,
                      self.volume, start, e.strerror)
            cls = NoSpace if e.errno in (errno.ENOSPC, errno.EDQUOT) else CacheError
            raise cls(f"cannot store fetched bytes of {self.ref.digest} in the cache: "
                      f"{e.strerror}", errno=errno.EIO) from None

    def _read_from_sources(self, offset: int, length: int) -> bytes:
        data = read_from_sources(self.sources, self.ref.digest, offset, length)
        self.stats.fetched_bytes += len(data)
        self.pmap.update_header(add_fetched=len(data))
        return data

    # -- recovery ---------------------------------------------------------------

    def recover_if_rebooted(self) -> None:
        """Opened under a new boot: trust no present chunk until it verifies again."""
        if not self.pmap.needs_recovery:
            return
        with self.pmap.locked(0, len(self.table.entries)):
            self.pmap.refresh(0, len(self.table.entries))
            dropped = 0
            for i in self.pmap.present_indexes():
                entry = self.table.entries[i]
                if not self.table.verify(i, os.pread(self._fd, entry.length, entry.offset)):
                    self.pmap.clear(i)
                    dropped += 1
            self.pmap.update_header(boot_id=current_boot_id())
        if dropped:
            log.warning("blob %s in %s: %d chunk(s) lost in a crash will be fetched again",
                        self.ref.digest, self.volume, dropped)


def read_from_sources(sources: Sequence[BlobSource], digest: str, offset: int,
                      length: int) -> bytes:
    """The first source that answers wins; a failing one is logged and skipped."""
    last_error: ErofsdError | None = None
    for source in list(sources):
        try:
            return source.read_range(digest, offset, length)
        except SourceError as e:
            log.warning("source %s failed for %s: %s", source.name, digest, e)
            last_error = e
    if last_error is None:
        raise SourceError(f"blob {digest}: no source to fetch it from")
    raise last_error
