"""Chunks shared within a volume: a miss filled from another blob's verified copy.

A domain's images share whole blobs when they hold the same layer; they
repeat far more content than that (an image and its rebuild, two images
built from the same base tree). Every chunk has its sha256 in its blob's
chunk table, so within one volume (a domain, or a private mount's own
fsid: volumes never share) a miss on a chunk whose digest another open
blob holds present is filled from that blob's cache file instead of the
network: read, checked against the digest, written, marked. A copy that
does not match (the file changed under the cache) is skipped, and the
chunk is fetched from its source as usual.

What it knows is derived, not kept: the chunk tables and present maps of
the volume's blobs open in this process. Nothing new is stored, so there
is nothing to go stale across a restart, a GC or a kill -9.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .blob import CachedBlob


class VolumeChunks:
    """The open blobs of one volume, indexed by the digests of their chunks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._where: dict[bytes, list[tuple[CachedBlob, int]]] = {}

    def add(self, blob: CachedBlob) -> None:
        with self._lock:
            for i, entry in enumerate(blob.table.entries):
                self._where.setdefault(entry.digest, []).append((blob, i))

    def remove(self, blob: CachedBlob) -> None:
        with self._lock:
            for entry in blob.table.entries:
                places = self._where.get(entry.digest)
                if places is None:
                    continue
                places[:] = [p for p in places if p[0] is not blob]
                if not places:
                    del self._where[entry.digest]

    def copy_of(self, digest: bytes, length: int, wanting: CachedBlob) -> bytes | None:
        """A verified copy of the chunk ``digest`` from another blob that has it, or None."""
        with self._lock:
            places = [p for p in self._where.get(digest, ()) if p[0] is not wanting]
        for blob, i in places:
            entry = blob.table.entries[i]
            if entry.length != length or not blob.pmap.is_present(i):
                continue
            try:
                data = blob.read_present(entry.offset, entry.length)
            except OSError:
                continue
            if hashlib.sha256(data).digest() == digest:
                return data
        return None
