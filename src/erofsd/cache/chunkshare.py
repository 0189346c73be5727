"""Chunks shared within a volume: a miss filled from a verified local copy.

A domain's images share whole blobs when they hold the same layer; they
repeat far more content than that (an image and its rebuild, two images
built from the same base tree). Every chunk has its sha256 in its blob's
chunk table, so within one volume (a domain, or a private mount's own
fsid: volumes never share) a miss on a chunk that another blob of the
volume holds present is filled from that blob's cache file instead of the
network. Where the blobs are is the volume's chunk index (chunkindex.py),
so a copy may come from a blob that no process has open, from before a
restart. A blob's table is entered in the background when it is opened
(a big one takes a tenth of a second, which no mount should wait for); a
miss here waits for that only when the blob has a chunk present to lend.

Every copy is checked against the chunk's digest where it lands, before
the caller marks it present: a copy that does not match (the file changed
under the cache, an index that points wrong) is skipped and the chunk is
fetched as usual. Where the cache's filesystem can (xfs, btrfs), the copy
is a reflink (FICLONERANGE): the two files share the blocks, which the
filesystem frees only when no file uses them, so GC removing the source
changes nothing for the copy. On ext4 it is a plain copy: fetched once,
stored twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, wait
from pathlib import Path
from typing import TYPE_CHECKING

from ..erofs.chunktable import ChunkEntry
from ..pools import process_pool
from ..posixio import CLONE_UNSUPPORTED, clone_range, pwrite_all
from .chunkindex import ChunkIndex
from .presentmap import present_on_disk

if TYPE_CHECKING:
    from .blob import CachedBlob

CLONE_BLOCK = 4096  # the alignment a reflink needs on the filesystems that have them
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)



@dataclasses.dataclass
class Filled:
    """What a local fill put in place."""
    bytes: int = 0
    reflinked: int = 0  # of those, shared with the source's blocks


class VolumeChunks:
    """One volume's chunks as seen from this process: its open blobs, and its index."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._opening = threading.Lock()
        self._open: dict[str, CachedBlob] = {}  # hex digest -> blob open in this process
        self._index: ChunkIndex | None = None
        self._entering: dict[str, Future[None]] = {}  # hex digest -> its table going in
        self._rebuilding: Future[None] | None = None  # the closed blobs' tables going in
        self.can_clone = True  # until the filesystem says otherwise

    # -- membership (under the cache's lock) -----------------------------------

    def register(self, blob: CachedBlob) -> None:
        self._open[_name(blob)] = blob

    def unregister(self, blob: CachedBlob) -> bool:
        """Forget ``blob``; True when no blob of the volume is open here any more."""
        if self._open.get(_name(blob)) is blob:
            del self._open[_name(blob)]
        return not self._open

    # -- the index ----------------------------------------------------------------

    @property
    def index(self) -> ChunkIndex:
        with self._opening:  # opening checks the file: not under self._lock
            if self._index is None:
                self._index = ChunkIndex(self.directory)
                if self._index.fresh:  # lost or damaged: the blobs nobody has open here
                    self._rebuild_others(self._index)  # go in again (their openers enter the rest)
            return self._index

    def _rebuild_others(self, index: ChunkIndex) -> None:
        with self._lock:
            mine = set(self._open)
        others = [p for p in sorted(self.directory.glob("*.map")) if p.stem not in mine]
        if others:
            self._rebuilding = process_pool("erofsd-chunk-index", 1).submit(
                index.rebuild, others)

    def enter(self, blob: CachedBlob) -> None:
        """Enter ``blob``'s table in the index, on this process's one entering thread."""
        name, table = _name(blob), blob.table
        future = process_pool("erofsd-chunk-index", 1).submit(
            lambda: self.index.enter(name, table))
        with self._lock:
            self._entering[name] = future

    def _settle(self, besides: str) -> None:
        """Wait for the tables still going in of this process's blobs that have a chunk
        present to lend (not ``besides``, the blob asking; not a fresh one), and for the
        rebuilding of a lost index (the closed blobs)."""
        with self._lock:
            self._entering = {n: f for n, f in self._entering.items() if not f.done()}
            lenders = [f for n, f in self._entering.items() if n != besides
                       and (blob := self._open.get(n)) is not None and blob.pmap.any_present()]
        if self._rebuilding is not None:
            lenders.append(self._rebuilding)
        wait(lenders)

    def close(self) -> None:
        with self._lock:
            entering = [*self._entering.values(), *filter(None, [self._rebuilding])]
        wait(entering)
        with self._opening:
            if self._index is not None:
                self._index.close()
                self._index = None

    # -- filling ------------------------------------------------------------------

    def fill(self, blob: CachedBlob, fd: int, chunks: range) -> Filled | None:
        """Write verified local copies of ``chunks`` of ``blob`` through ``fd``; None when
        one has no good copy (what was written then stays unmarked: a fetch overwrites
        it). OSError when the cache file cannot take the bytes."""
        self._settle(_name(blob))
        filled = Filled()
        for i in chunks:
            entry = blob.table.entries[i]
            reflinked = self._fill_chunk(_name(blob), fd, entry)
            if reflinked is None:
                return None
            filled.bytes += entry.length
            filled.reflinked += reflinked
        return filled

    def _fill_chunk(self, name: str, fd: int, entry: ChunkEntry) -> int | None:
        """Bytes reflinked for one chunk put in place and verified, or None."""
        for other, index, offset in self.index.places(entry.digest, entry.length, name):
            with self._source(other, index) as source:
                if source is None:
                    continue
                if self.can_clone:
                    reflinked = self._clone(source, offset, fd, entry)
                    if reflinked is not None:
                        if reflinked:
                            return reflinked
                        continue  # in place, but not the right bytes
                if _copy(source, offset, fd, entry):
                    return 0
        return None

    @contextlib.contextmanager
    def _source(self, name: str, index: int) -> Iterator[int | None]:
        """An fd reading blob ``name``, if it holds chunk ``index`` present."""
        blob = self._open.get(name)
        if blob is not None:
            yield blob.present_fd(index)
            return
        path = self.directory / name
        try:
            if not present_on_disk(str(path) + ".map", index):
                yield None
                return
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # removed by GC since the index said so
            yield None
            return
        try:
            yield fd
        finally:
            os.close(fd)

    def _clone(self, source: int, offset: int, fd: int, entry: ChunkEntry) -> int | None:
        """Reflink the chunk's whole blocks, copy its tail, read it back and check it:
        the bytes reflinked (0: in place but wrong), or None where no reflink can be."""
        body = entry.length - entry.length % CLONE_BLOCK
        if not body or offset % CLONE_BLOCK or entry.offset % CLONE_BLOCK:
            return None
        try:
            clone_range(source, offset, body, fd, entry.offset)
            if body < entry.length:
                tail = os.pread(source, entry.length - body, offset + body)
                pwrite_all(fd, tail, entry.offset + body)
        except OSError as e:
            if e.errno in NO_SPACE:
                raise
            if e.errno in CLONE_UNSUPPORTED:
                self.can_clone = False
            return None
        landed = os.pread(fd, entry.length, entry.offset)
        return body if hashlib.sha256(landed).digest() == entry.digest else 0


def _copy(source: int, offset: int, fd: int, entry: ChunkEntry) -> bool:
    """Read the chunk from ``source``, check it, write it: False if it was not right."""
    try:
        data = os.pread(source, entry.length, offset)
    except OSError:
        return False
    if hashlib.sha256(data).digest() != entry.digest:
        return False
    pwrite_all(fd, data, entry.offset)
    return True


def _name(blob: CachedBlob) -> str:
    return blob.ref.digest.split(":", 1)[1]
