"""The data of a stored blob read in place: frames decoded on demand, every digest checked.

A local OCI layout holds blobs as they travel. An uncompressed blob is
its own data; a compressed one is read through ``DecodedBlob``, which
maps a data range to the frames that hold it, checks each frame's stored
bytes and decoded chunks against the chunk table (chunktable.py) and
keeps the last few decoded frames, since the reader asks for small pieces
of the same chunk in a row.
"""

from __future__ import annotations

from ..lru import Lru
from .chunktable import ChunkTable
from .readat import ReadAt

KEEP_BYTES = 16 << 20  # decoded frames kept, at most


class DecodedBlob:
    def __init__(self, stored: ReadAt, table: ChunkTable) -> None:
        self.stored = stored
        self.table = table
        self._frames: Lru[int, bytes] = Lru(KEEP_BYTES, len)

    @property
    def size(self) -> int:
        return self.table.data_size

    def frame(self, index: int) -> bytes:
        """Frame ``index`` decoded and verified (IntegrityError when it is not right)."""
        frame = self.table.frames[index]
        return self._frames.get_or_make(index, lambda: self.table.open_frame(
            index, self.stored.read_at(frame.stored_offset, frame.stored_length)))

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        chunks = self.table.covering(offset, end)
        if not chunks:
            return b""
        parts = []
        first, last = self.table.frame_of(chunks.start), self.table.frame_of(chunks.stop - 1)
        for index in range(first, last + 1):
            frame = self.table.frames[index]
            data = self.frame(index)
            parts.append(data[max(offset, frame.offset) - frame.offset:
                              min(end, frame.end) - frame.offset])
        return parts[0] if len(parts) == 1 else b"".join(parts)
