"""Write one layer's file data as a chunked, content-addressed blob.

Each file is cut into chunks of ``chunk_size``; a chunk is stored padded to
whole blocks, once per blob (identical chunks share one copy), and an
all-zero chunk is not stored at all (a hole). The blob's bytes therefore
depend only on the file contents and the order they come in, never on
timestamps or inode numbers: the same layer always gives the same digest.

With compression, the chunks go into frames (chunktable.py): a chunk of
``frame_size`` or more is a frame of its own, smaller ones are packed
together in order up to that size, and each frame is coded on its own.
Frames are compressed on every core while the next ones are read, and
written in order, so the digest does not depend on the threads.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Protocol

from ..errors import BuildError
from . import codec
from .chunktable import ChunkEntry, ChunkTable, Frame
from .tree import Node

# A file's chunk indexes live in the bootstrap, 8 bytes each: 2^22 of them is
# 32 MiB of metadata for one file (4 TiB of data at the default 1 MiB chunk).
# A size past that is refused rather than written (a hostile tar may declare
# a sparse file of 2^62 bytes).
MAX_FILE_CHUNKS = 1 << 22

_workers: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _workers
    if _workers is None:
        _workers = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="erofsd-zstd")
    return _workers


class Content(Protocol):
    """A regular file's bytes, as chunks: bytes, or None for a known all-zero chunk."""

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes | None]: ...


@dataclasses.dataclass(frozen=True)
class BlobInfo:
    digest: str  # "sha256:<hex>" of the whole stored blob (frames + chunk table)
    size: int
    data_size: int  # bytes the kernel addresses (the device slot's blocks)
    table_offset: int  # where the chunk table begins: data_size when uncompressed
    table_digest: str  # "sha256:<hex>" of the chunk table
    chunk_count: int
    path: str  # where the finished blob file lies

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    @property
    def compressed(self) -> bool:
        return self.table_offset != self.data_size


def _encode(data: bytes, level: int) -> tuple[int, bytes, bytes]:
    code, stored = codec.encode(data, level)
    return code, stored, hashlib.sha256(stored).digest()


class BlobWriter:
    def __init__(self, out: BinaryIO, chunk_size: int, block_size: int = 4096,
                 compression: codec.Compression | None = None) -> None:
        self._out = out
        self._chunk_size = chunk_size
        self._bs = block_size
        self._compression = compression
        self._zeros = bytes(chunk_size)
        self._hash = hashlib.sha256()
        self._offset = 0  # the data's size so far
        self._stored = 0  # the stored blob's size so far
        self._entries: list[ChunkEntry] = []
        self._frames: list[Frame] = []
        self._by_digest: dict[bytes, int] = {}
        self._open: list[bytes] = []  # chunks of the frame being filled
        self._open_first = 0  # the entry of its first chunk
        self._open_bytes = 0
        self._coding: collections.deque[tuple[int, int, int, Future]] = collections.deque()
        self.deduplicated_bytes = 0  # stored bytes saved by sharing identical chunks

    def add(self, node: Node, content: Content) -> None:
        """Store a file's chunks; ``node.chunks`` gets each chunk's block address or None."""
        chunks = -(-node.size // self._chunk_size)
        if chunks > MAX_FILE_CHUNKS:
            raise BuildError(f"{node.origin}: a file of {node.size} bytes needs {chunks} chunks "
                             f"of {self._chunk_size} bytes; at most {MAX_FILE_CHUNKS} are "
                             "stored (use a larger --chunk-size)")
        node.chunks = [self._store(chunk) for chunk in content.iter_chunks(self._chunk_size)]

    def _store(self, chunk: bytes | None) -> int | None:
        if chunk is None or (chunk[:1] == b"\0" and chunk == self._zeros[:len(chunk)]):
            return None
        pad = -len(chunk) % self._bs
        stored = chunk + bytes(pad) if pad else chunk
        digest = hashlib.sha256(stored).digest()
        offset = self._by_digest.get(digest)
        if offset is None:
            offset = self._offset
            self._by_digest[digest] = offset
            self._entries.append(ChunkEntry(offset, len(stored), digest))
            self._offset += len(stored)
            if self._compression is None:
                self._write(stored)
            else:
                self._frame_add(stored)
        else:
            self.deduplicated_bytes += len(stored)
        return offset // self._bs

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._hash.update(data)
        self._stored += len(data)

    # -- frames ----------------------------------------------------------------

    def _frame_add(self, chunk: bytes) -> None:
        limit = self._compression.frame_size
        if self._open and self._open_bytes + len(chunk) > limit:
            self._frame_close()
        if not self._open:
            self._open_first = len(self._entries) - 1  # this chunk's entry, just added
        self._open.append(chunk)
        self._open_bytes += len(chunk)
        if self._open_bytes >= limit:
            self._frame_close()

    def _frame_close(self) -> None:
        if not self._open:
            return
        # consecutive entries (a chunk stored before adds neither entry nor frame piece)
        first = self._open_first
        data = self._open[0] if len(self._open) == 1 else b"".join(self._open)
        job = _pool().submit(_encode, data, self._compression.level)
        self._coding.append((first, first + len(self._open), len(data), job))
        self._open, self._open_bytes = [], 0
        while len(self._coding) > 2 * (os.cpu_count() or 1):
            self._frame_write()

    def _frame_write(self) -> None:
        first, stop, length, job = self._coding.popleft()
        code, stored, digest = job.result()
        offset = self._entries[first].offset
        self._frames.append(Frame(first, stop, offset, length, self._stored, len(stored),
                                  code, digest))
        self._write(stored)

    # -- the end -----------------------------------------------------------------

    def finish(self, path: str) -> BlobInfo:
        """Append the chunk table and describe the blob (the caller closes the file)."""
        if self._compression is not None:
            self._frame_close()
            while self._coding:
                self._frame_write()
        table = ChunkTable(tuple(self._entries), tuple(self._frames)).pack()
        table_offset = self._stored
        self._write(table)
        self._out.flush()
        return BlobInfo(
            digest="sha256:" + self._hash.hexdigest(),
            size=self._stored,
            data_size=self._offset,
            table_offset=table_offset,
            table_digest="sha256:" + hashlib.sha256(table).hexdigest(),
            chunk_count=len(self._entries),
            path=path,
        )
