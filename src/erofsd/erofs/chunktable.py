"""The chunk digest table of a blob: (offset, length, sha256) per stored chunk.

A blob is its stored chunks back to back (each block-aligned), followed by
this table. The kernel sees only the data part (the device slot's blocks);
the table sits after it, and the manifest pins the table by its sha256, so
every chunk can be verified on its own when it is fetched lazily.

    header: magic "ERFSDCT1", u32 entry count, u32 reserved
    entry:  u64 offset, u32 length, u32 reserved, 32-byte sha256
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import struct

from ..errors import CorruptImage

MAGIC = b"ERFSDCT1"
HEADER = struct.Struct("<8sII")
ENTRY = struct.Struct("<QI4x32s")
assert (HEADER.size, ENTRY.size) == (16, 48)


@dataclasses.dataclass(frozen=True)
class ChunkEntry:
    offset: int
    length: int
    digest: bytes  # raw sha256 of the stored bytes

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclasses.dataclass(frozen=True)
class ChunkTable:
    entries: tuple[ChunkEntry, ...]

    @property
    def data_size(self) -> int:
        return self.entries[-1].end if self.entries else 0

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, len(self.entries), 0) + b"".join(
            ENTRY.pack(e.offset, e.length, e.digest) for e in self.entries)

    @classmethod
    def unpack(cls, data: bytes, data_size: int | None = None) -> ChunkTable:
        """Decode and check: entries contiguous from 0, each non-empty, ending at data_size."""
        if len(data) < HEADER.size:
            raise CorruptImage("chunk table shorter than its header")
        magic, count, _ = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CorruptImage("chunk table has a bad magic")
        if len(data) != HEADER.size + count * ENTRY.size:
            raise CorruptImage(f"chunk table of {len(data)} bytes cannot hold {count} entries")
        entries, expect = [], 0
        for i in range(count):
            offset, length, digest = ENTRY.unpack_from(data, HEADER.size + i * ENTRY.size)
            if offset != expect or length == 0:
                raise CorruptImage(f"chunk table entry {i} at {offset}+{length} is not "
                                   f"contiguous (expected offset {expect})")
            entries.append(ChunkEntry(offset, length, digest))
            expect = offset + length
        table = cls(tuple(entries))
        if data_size is not None and table.data_size != data_size:
            raise CorruptImage(f"chunk table covers {table.data_size} bytes, blob data is "
                               f"{data_size}")
        return table

    def covering(self, start: int, end: int) -> range:
        """Indexes of the entries that overlap [start, end)."""
        if start >= end or not self.entries:
            return range(0)
        first = bisect.bisect_right(self._offsets, start) - 1
        last = bisect.bisect_left(self._offsets, end)
        return range(max(first, 0), last)

    @property
    def _offsets(self) -> list[int]:
        cached = self.__dict__.get("_offsets_cache")
        if cached is None:
            cached = [e.offset for e in self.entries]
            object.__setattr__(self, "_offsets_cache", cached)
        return cached

    def present_bytes(self, present: bytes | bytearray) -> int:
        """Bytes in the entries whose flag in ``present`` (one byte per entry) is set."""
        return sum(e.length for e, flag in zip(self.entries, present, strict=True) if flag)

    def verify(self, index: int, data: bytes) -> bool:
        entry = self.entries[index]
        return len(data) == entry.length and hashlib.sha256(data).digest() == entry.digest
