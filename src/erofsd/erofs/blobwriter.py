"""Write one layer's file data as a chunked, content-addressed blob.

Each file is cut into chunks of ``chunk_size``; a chunk is stored padded to
whole blocks, once per blob (identical chunks share one copy), and an
all-zero chunk is not stored at all (a hole). The blob's bytes therefore
depend only on the file contents and the order they come in, never on
timestamps or inode numbers: the same layer always gives the same digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from ..errors import BuildError
from .chunktable import ChunkEntry, ChunkTable
from .tree import Node

# A file's chunk indexes live in the bootstrap, 8 bytes each: 2^22 of them is
# 32 MiB of metadata for one file (4 TiB of data at the default 1 MiB chunk).
# A size past that is refused rather than written (a hostile tar may declare
# a sparse file of 2^62 bytes).
MAX_FILE_CHUNKS = 1 << 22


class Content(Protocol):
    """A regular file's bytes, as chunks: bytes, or None for a known all-zero chunk."""

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes | None]: ...


@dataclasses.dataclass(frozen=True)
class BlobInfo:
    digest: str  # "sha256:<hex>" of the whole blob (data + chunk table)
    size: int
    data_size: int  # bytes the kernel addresses (the device slot's blocks)
    table_digest: str  # "sha256:<hex>" of the chunk table
    chunk_count: int
    path: str  # where the finished blob file lies

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


class BlobWriter:
    def __init__(self, out: BinaryIO, chunk_size: int, block_size: int = 4096) -> None:
        self._out = out
        self._chunk_size = chunk_size
        self._bs = block_size
        self._zeros = bytes(chunk_size)
        self._hash = hashlib.sha256()
        self._offset = 0
        self._entries: list[ChunkEntry] = []
        self._by_digest: dict[bytes, int] = {}
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
            self._out.write(stored)
            self._hash.update(stored)
            self._entries.append(ChunkEntry(offset, len(stored), digest))
            self._offset += len(stored)
        else:
            self.deduplicated_bytes += len(stored)
        return offset // self._bs

    def finish(self, path: str) -> BlobInfo:
        """Append the chunk table and describe the blob (the caller closes the file)."""
        table = ChunkTable(tuple(self._entries)).pack()
        self._out.write(table)
        self._hash.update(table)
        self._out.flush()
        return BlobInfo(
            digest="sha256:" + self._hash.hexdigest(),
            size=self._offset + len(table),
            data_size=self._offset,
            table_digest="sha256:" + hashlib.sha256(table).hexdigest(),
            chunk_count=len(self._entries),
            path=path,
        )
