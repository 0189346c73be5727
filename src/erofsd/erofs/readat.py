"""Positional reads: the only way the reader touches bytes.

``read_at(offset, length)`` returns up to ``length`` bytes and fewer only at
the end of the object. Nothing shares a seek pointer, so any number of
threads can read one image at once. Later layers (the blob cache, remote
sources) implement the same two members. A device that may have to fetch
bytes can also offer ``is_present(offset, length)``: True when a read of
that range will not wait on the network.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Protocol

from ..lru import Lru


class ReadAt(Protocol):
    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...


class BytesReadAt:
    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        return self._data[offset:offset + length]


class FileReadAt:
    """A local file read with pread(2); the size is fixed when opened."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(self._fd)
        if stat.S_ISDIR(st.st_mode):  # opening a directory read-only succeeds; reading fails
            os.close(self._fd)
            raise IsADirectoryError(errno.EISDIR, "Is a directory", self.path)
        self._size = st.st_size

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        parts = []
        while length > 0:
            part = os.pread(self._fd, length, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return b"".join(parts) if len(parts) != 1 else parts[0]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileReadAt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockCachedReadAt:
    """Keeps recently used blocks of a small, immutable object (the bootstrap).

    Metadata lookups read many tiny structs from the same few blocks; this
    turns them into memory reads. Bounded: at most ``capacity`` blocks.
    """

    def __init__(self, inner: ReadAt, block_size: int = 4096, capacity: int = 1024) -> None:
        self._inner = inner
        self._bs = block_size
        self._blocks: Lru[int, bytes] = Lru(capacity)

    @property
    def size(self) -> int:
        return self._inner.size

    def _block(self, index: int) -> bytes:
        return self._blocks.get_or_make(
            index, lambda: self._inner.read_at(index * self._bs, self._bs))

    def read_at(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        first, last = offset // self._bs, (offset + length - 1) // self._bs
        if first == last:
            start = offset - first * self._bs
            return self._block(first)[start:start + length]
        data = b"".join(self._block(i) for i in range(first, last + 1))
        start = offset - first * self._bs
        return data[start:start + length]
