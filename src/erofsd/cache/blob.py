"""One cached blob (a cookie's object): lazy, verified, shared, accounted.

``read_at`` serves the kernel-visible blob: the data, uncompressed,
block-aligned, followed in the cache file by the chunk table. Missing
chunks are fetched from the sources as the frames that hold them (raw or
compressed, chunktable.py), each frame's stored bytes verified against
its sha256 before they are decoded, each chunk against its own after,
written, and only then marked present. Within a process, concurrent
misses on a frame make one fetch
(single flight); across processes, byte-range locks on the present map
do the same. Adjacent misses merge into one request up to
``merge_limit``, and a miss that continues a sequential stream reads ahead
by a window that grows with the stream.

A write error (ENOSPC, EIO) fails the read with a CacheError that names
the cause, marks nothing, and leaves the cache usable.

A span of an ordinary gzip layer (a span table's frame) is entered with
the data before it, or its window: spanwindows.py says where that comes
from. A miss on a chunk another blob of the volume holds is filled from
there (chunkshare.py). Whole blobs are filled ahead of a reader by fill.py.

A blob that a daemon serves to the kernel through fanotify is *owned*: the
daemon holds an exclusive flock on ``<blob>.owner``, and every write to the
file must go through its no-notify fd. Any other process never writes it
(a plain write to a marked file would wait on the daemon, which might be
waiting on this process's lock). It reads missing chunks from the file
instead: the read raises a fanotify event, and the owning daemon fetches,
verifies and stores them. What comes back is verified again here; a chunk
that does not match (the mark was just dropped) is fetched directly and
kept in memory only. A source that lies
is retried, then the read fails with IntegrityError: a wrong byte is never
returned and never stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from ..erofs.chunktable import ChunkTable
from ..errors import CacheError, ErofsdError, IntegrityError, NoSpace
from ..oci.image import BlobRef
from ..oci.source import BlobSource, read_from_sources
from ..posixio import pwrite_all
from .chunkshare import VolumeChunks
from .presentmap import PresentMap, current_boot_id
from .spanwindows import SpanWindows

log = logging.getLogger("erofsd.cache")

VERIFY_ATTEMPTS = 4
WHOLE_PIECE = 4 << 20
STREAMS = 16  # sequential readers tracked per blob for readahead


@dataclasses.dataclass
class CacheTuning:
    merge_limit: int = 4 << 20  # largest single request made of adjacent misses
    # The largest window fetched after a miss that continues a previous fetch
    # (sequential reading); a random miss fetches only what it needs. 0: off.
    readahead: int = 1 << 20
    # An ordinary gzip layer (a span table's) of at most this many bytes is fetched
    # whole at its first miss: one request, and no window, each span entered with the
    # one before it. 0: off.
    whole_layer: int = 1 << 20


@dataclasses.dataclass
class CookieStats:
    read_bytes: int = 0
    fetched_bytes: int = 0  # by this process; the map header keeps the lifetime total
    local_bytes: int = 0  # filled from another blob of the volume, not fetched
    reflinked_bytes: int = 0  # of those, sharing the other blob's disk blocks
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
        self._retired_fds: list[int] = []  # replaced by use_fd; closed with the blob
        self.owner_path = data_path + ".owner"
        self.owned = False  # set by the daemon that serves this blob through fanotify
        self._lock = threading.Lock()
        self._inflight: dict[int, threading.Event] = {}
        # recent sequential streams: the entry after each one's last fetch -> the
        # readahead window that fetch used (the start of the blob begins one)
        self._streams: OrderedDict[int, int] = OrderedDict({0: 0})
        self._fill_cursor = 0  # frames before it are present or being fetched
        self.neighbours: VolumeChunks | None = None  # the volume's other blobs (chunkshare)
        self.poisoned: IntegrityError | None = None  # whole, it did not match its diff_id
        self._windows: SpanWindows | None = None  # how a span of a gzip layer is entered
        if table.checkpoints:
            assert ref.windows_blob is not None  # the table was checked against the ref
            self._windows = SpanWindows(table, ref.windows_blob.digest, self._held,
                                        self._fetch_bytes)
        self.recover_if_rebooted()

    # -- the ReadAt interface -----------------------------------------------

    @property
    def size(self) -> int:
        return self.ref.data_size

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.ref.data_size)
        if offset >= end:
            return b""
        unstored = self._ensure_range(offset, end)
        if unstored:
            data = self._assemble(offset, end, unstored)
        else:
            data = os.pread(self._fd, end - offset, offset)
        self.stats.read_bytes += len(data)
        return data

    def is_present(self, offset: int, length: int) -> bool:
        """Every chunk of [offset, offset+length) is here: reading it fetches nothing."""
        return all(self.pmap.is_present(i) for i in self.table.covering(offset, offset + length))

    def ensure_range(self, offset: int, end: int) -> None:
        """Make [offset, end) present without reading it (for kernel data paths)."""
        if self._ensure_range(offset, end):
            raise CacheError(f"blob {self.ref.digest} is served by another process; "
                             "this one cannot store chunks in it")

    def _ensure_range(self, offset: int, end: int) -> dict[int, bytes]:
        if self.poisoned is not None:
            raise self.poisoned
        wanted = self.table.covering(offset, min(end, self.ref.data_size))
        if all(self.pmap.is_present(i) for i in wanted):
            self.stats.hits += 1
            return {}
        self.stats.misses += 1
        started = time.monotonic()
        try:
            return self._ensure(wanted)
        finally:
            self.stats.blocked_seconds += time.monotonic() - started

    def _assemble(self, offset: int, end: int, unstored: dict[int, bytes]) -> bytes:
        """Bytes [offset, end) from present chunks and verified chunks held in memory."""
        parts = []
        for i in self.table.covering(offset, end):
            entry = self.table.entries[i]
            start, stop = max(offset, entry.offset), min(end, entry.end)
            piece = unstored.get(i)
            if piece is None:
                parts.append(os.pread(self._fd, stop - start, start))
            else:
                parts.append(piece[start - entry.offset:stop - entry.offset])
        return b"".join(parts)

    def use_fd(self, fd: int) -> None:
        """From now on read and write through ``fd`` (a no-notify fd from fanotify)."""
        with self._lock:
            self._retired_fds.append(self._fd)
            self._fd = fd

    def writable(self) -> bool:
        """May this process store chunks? Not when another process owns the blob."""
        if self.owned:
            return True
        try:
            fd = os.open(self.owner_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    @property
    def complete(self) -> bool:
        return self.pmap.all_present()

    @property
    def cached_bytes(self) -> int:
        return self.table.present_bytes(self.pmap.bytes)

    def add_source(self, source: BlobSource) -> None:
        with self._lock:
            if all(s.name != source.name for s in self.sources):
                self.sources.append(source)

    def close(self) -> None:
        for fd in [self._fd, *self._retired_fds]:
            if fd >= 0:
                os.close(fd)
        self._fd, self._retired_fds = -1, []
        self.pmap.close()

    # -- fetching -------------------------------------------------------------
    #
    # The unit of fetching is the frame (chunktable.py): a run of chunks whose
    # stored bytes travel, are verified and are decoded together. Single flight,
    # merging and readahead all count frames and their stored (compressed) bytes;
    # presence stays per chunk.

    def _frame_present(self, index: int) -> bool:
        frame = self.table.frames[index]
        return all(self.pmap.is_present(i) for i in frame.chunks)

    def _ensure(self, wanted: range) -> dict[int, bytes]:
        """Make ``wanted`` present; returns verified chunks it was not allowed to store."""
        unstored: dict[int, bytes] = {}
        frame_of = self.table.frame_of
        while True:
            with self._lock:
                missing = [i for i in wanted if not self.pmap.is_present(i)
                           and i not in unstored]
                if not missing:
                    return unstored
                frames = sorted({frame_of(i) for i in missing})
                mine = [f for f in frames if f not in self._inflight]
                waits = {self._inflight[f] for f in frames if f in self._inflight}
                if mine and self.table.checkpoints and self.ref.size <= self.tuning.whole_layer:
                    mine = [f for f in range(len(self.table.frames))
                            if not self._frame_present(f) and f not in self._inflight]
                if mine:
                    window = self._window(frame_of(wanted.start), mine)
                    if window:
                        after = max(frame_of(wanted.stop - 1), mine[-1]) + 1
                        mine += self._readahead(after, window)
                    self._streams[mine[-1] + 1] = window
                    if len(self._streams) > STREAMS:
                        self._streams.popitem(last=False)
                event = threading.Event()
                for f in mine:
                    self._inflight[f] = event
            if mine:
                try:
                    self._fetch(mine, unstored)
                finally:
                    with self._lock:
                        for f in mine:
                            del self._inflight[f]
                    event.set()
            for other in waits:
                other.wait()

    def fill(self, stop: threading.Event) -> None:
        """Fetch every missing frame in order, a request of up to ``merge_limit`` at a
        time, until all are present or ``stop`` is set: a whole read (extract) runs
        this on a few threads so the link stays busy ahead of the reader. A frame a
        reader is fetching is skipped; a reader that wants a frame this claimed
        waits for it (single flight). A failure ends the fill quietly: the reader
        meets it on its own miss, and retries."""
        if not self.writable():
            return
        while not stop.is_set():
            with self._lock:
                mine = self._next_missing_run()
                if not mine:
                    return
                event = threading.Event()
                for f in mine:
                    self._inflight[f] = event
            try:
                self._fetch(mine, {})
            except ErofsdError as e:
                log.info("filling %s stopped: %s", self.ref.digest, e)
                return
            finally:
                with self._lock:
                    for f in mine:
                        del self._inflight[f]
                event.set()

    def _next_missing_run(self) -> list[int]:
        """The first run of missing frames that nobody fetches, up to ``merge_limit``."""
        frames = self.table.frames
        f = self._fill_cursor
        while f < len(frames) and (self._frame_present(f) or f in self._inflight):
            f += 1
        self._fill_cursor = f
        run, size = [], 0
        while f < len(frames) and not self._frame_present(f) and f not in self._inflight \
                and (not run or size + frames[f].stored_length <= self.tuning.merge_limit):
            run.append(f)
            size += frames[f].stored_length
            f += 1
        return run

    def _window(self, start: int, missing: list[int]) -> int:
        """Readahead stored bytes for a miss: none unless it continues a stream.

        A stream's first continuation reads ahead twice the miss, each next one
        twice the last window, up to ``tuning.readahead``: a few small files
        read in order cost little, a long sequential read soon gets the lot.
        """
        last = self._streams.pop(start, None)
        if last is None or not self.tuning.readahead:
            return 0
        miss = sum(self.table.frames[f].stored_length for f in missing)
        return min(self.tuning.readahead, max(2 * last, 2 * miss))

    def _readahead(self, start: int, budget: int) -> list[int]:
        extra = []
        f = start
        frames = self.table.frames
        while budget > 0 and f < len(frames) and not self._frame_present(f) \
                and f not in self._inflight:
            extra.append(f)
            budget -= frames[f].stored_length
            f += 1
        return extra

    def _runs(self, indexes: list[int]) -> list[range]:
        """Consecutive frames grouped into requests of at most merge_limit stored bytes."""
        runs: list[range] = []
        frames = self.table.frames
        start = prev = indexes[0]
        size = frames[start].stored_length
        for f in indexes[1:]:
            if f == prev + 1 and size + frames[f].stored_length <= self.tuning.merge_limit:
                size += frames[f].stored_length
            else:
                runs.append(range(start, prev + 1))
                start, size = f, frames[f].stored_length
            prev = f
        runs.append(range(start, prev + 1))
        return runs

    def _chunks_of(self, run: range) -> range:
        frames = self.table.frames
        return range(frames[run.start].first, frames[run.stop - 1].stop)

    def _fetch(self, indexes: list[int], unstored: dict[int, bytes]) -> None:
        store = self.writable()
        for run in self._runs(indexes):
            chunks = self._chunks_of(run)
            if store:
                with self.pmap.locked(chunks.start, chunks.stop):
                    self.pmap.refresh(chunks.start, chunks.stop)  # another process may have it
                    todo = [f for f in run if not self._frame_present(f)]
                    self._fetch_run(self._fill_locally(todo), None)
            else:
                self._read_through_owner(chunks, unstored)

    def _fill_locally(self, todo: list[int]) -> list[int]:
        """Store the frames of ``todo`` whose every chunk another blob of the volume holds
        (each copy verified where it lands); the frames left to fetch."""
        if self.neighbours is None:
            return todo
        left = []
        for f in todo:
            chunks = self.table.frames[f].chunks
            with self._writing(self.table.entries[chunks.start].offset):
                filled = self.neighbours.fill(self, self._fd, chunks)
                if filled is None:
                    left.append(f)
                    continue
                self._mark(chunks)
            self.stats.local_bytes += filled.bytes
            self.stats.reflinked_bytes += filled.reflinked
            self.pmap.update_header(add_local=filled.bytes, add_reflinked=filled.reflinked)
        return left

    def present_fd(self, index: int) -> int | None:
        """An fd that reads chunk ``index`` without a fetch, if this blob holds it."""
        self.pmap.refresh(index, index + 1)
        return self._fd if self.pmap.is_present(index) else None

    def _read_through_owner(self, todo: range, unstored: dict[int, bytes]) -> None:
        """Read chunks of an owned blob from its file (the owner fills them); verify."""
        first, last = self.table.entries[todo.start], self.table.entries[todo.stop - 1]
        # A fresh fd: the kernel decides at open() whether reads of a file raise
        # pre-content events, and ours may predate the owner's mark.
        fd = os.open(self.data_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, last.end - first.offset, first.offset)
        finally:
            os.close(fd)
        bad: set[int] = set()
        for i in todo:
            entry = self.table.entries[i]
            piece = data[entry.offset - first.offset:entry.end - first.offset]
            if self.table.verify(i, piece):
                unstored[i] = piece
            else:
                bad.add(self.table.frame_of(i))
        if bad:
            self._fetch_run(sorted(bad), unstored)

    def _fetch_run(self, todo: list[int], unstored: dict[int, bytes] | None) -> None:
        """Fetch and verify frames ``todo``: stored, or kept in ``unstored`` when given."""
        for attempt in range(VERIFY_ATTEMPTS):
            if not todo:
                return
            todo = self._fetch_verified(todo, attempt, unstored)
        if todo:
            frame = self.table.frames[todo[0]]
            raise IntegrityError(
                f"blob {self.ref.digest}: data at {frame.offset} (stored at "
                f"{frame.stored_offset}) failed verification {VERIFY_ATTEMPTS} times; "
                "not using those bytes")

    def _fetch_verified(self, todo: list[int], attempt: int,
                        unstored: dict[int, bytes] | None) -> list[int]:
        """One fetch of each contiguous group in ``todo``; returns the frames still bad."""
        bad: list[int] = []
        frames = self.table.frames
        for group in self._runs(todo):
            start = frames[group.start].stored_offset
            local = attempt == 0 and unstored is None  # the bytes held before may be used
            ahead = self._windows.ahead(group.start, local=local) if self._windows else None
            stored = self._read_from_sources(start, frames[group.stop - 1].stored_end - start)
            good: list[bytes] = []  # decoded data of the good frames since the last bad one
            good_start = group.start
            for f in group:
                frame = frames[f]
                try:
                    if ahead is not None and f == group.start:
                        before = ahead.result()
                    elif self._windows is not None:
                        before = self._windows.before(f, good[-1] if good else b"", local=local)
                    else:
                        before = b""  # a frame of an erofsd blob needs nothing before it
                    data = self.table.open_frame(
                        f, stored[frame.stored_offset - start:frame.stored_end - start], before)
                except IntegrityError as e:
                    log.warning("blob %s: %s (attempt %d); refetching", self.ref.digest, e,
                                attempt + 1)
                    bad.append(f)
                    self._keep(good_start, good, unstored)
                    good, good_start = [], f + 1
                    continue
                good.append(data)
            self._keep(good_start, good, unstored)
        return bad

    def _held(self, offset: int, length: int) -> bytes | None:
        """Bytes [offset, offset+length) if every chunk of them is here (verified when
        stored), else None."""
        return os.pread(self._fd, length, offset) if self.is_present(offset, length) else None

    def _keep(self, first: int, decoded: list[bytes], unstored: dict[int, bytes] | None
              ) -> None:
        """Verified data of frames from ``first`` on: stored, or its chunks kept in memory."""
        if not decoded:
            return
        frames, entries = self.table.frames, self.table.entries
        chunks = range(frames[first].first, frames[first + len(decoded) - 1].stop)
        if unstored is None:
            self._store(chunks, decoded[0] if len(decoded) == 1 else b"".join(decoded))
            return
        base = entries[chunks.start].offset
        data = b"".join(decoded)
        for i in chunks:
            unstored[i] = data[entries[i].offset - base:entries[i].end - base]

    def _store(self, chunks: range, data: bytes) -> None:
        """Write verified chunks, then mark them; any failure marks nothing."""
        start = self.table.entries[chunks.start].offset
        with self._writing(start):
            pwrite_all(self._fd, data, start)
            self._mark(chunks)

    def _mark(self, chunks: range) -> None:
        """Chunks whose verified bytes are written are present (and a whole layer is
        checked against its diff_id)."""
        self.pmap.mark(chunks.start, chunks.stop)
        if self.ref.diff_id and self.pmap.all_present():
            self._check_whole()

    @contextlib.contextmanager
    def _writing(self, start: int) -> Iterator[None]:
        """Cache write errors (ENOSPC, EIO) as the CacheError a reader gets."""
        try:
            yield
        except OSError as e:
            log.error("cache write failed for %s in %s at %d: %s", self.ref.digest,
                      self.volume, start, e.strerror)
            cls = NoSpace if e.errno in (errno.ENOSPC, errno.EDQUOT) else CacheError
            raise cls(f"cannot store fetched bytes of {self.ref.digest} in the cache: "
                      f"{e.strerror}", errno=errno.EIO) from None

    def _read_from_sources(self, offset: int, length: int) -> bytes:
        return self._fetch_bytes(self.ref.digest, offset, length)

    def _fetch_bytes(self, digest: str, offset: int, length: int) -> bytes:
        """Bytes of the stored blob (or of its window blob), counted as fetched."""
        data = read_from_sources(self.sources, digest, offset, length)
        self.stats.fetched_bytes += len(data)
        self.pmap.update_header(add_fetched=len(data))
        return data

    def _check_whole(self) -> None:
        """The data, now all here, against the diff_id the image pins: what the span table
        vouched for must be the image's layer. If not, nothing stays present and every
        read fails from now on (the index lied: its spans' digests were its own)."""
        digest = hashlib.sha256()
        for offset in range(0, self.ref.data_size, WHOLE_PIECE):
            digest.update(os.pread(self._fd, min(WHOLE_PIECE, self.ref.data_size - offset),
                                   offset))
        if "sha256:" + digest.hexdigest() == self.ref.diff_id:
            return
        for i in range(len(self.table.entries)):
            self.pmap.clear(i)
        self.poisoned = IntegrityError(
            f"blob {self.ref.digest}: the whole layer is not its diff_id {self.ref.diff_id}; "
            "its index does not describe this image")
        log.error("%s", self.poisoned)
        raise self.poisoned

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
