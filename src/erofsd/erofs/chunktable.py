"""The chunk table of a blob: every stored chunk, and the frames they travel in.

The kernel sees a blob's *data*: its stored chunks back to back, each
block-aligned, at the offsets the bootstrap's chunk indexes give. What
the registry holds is the *stored blob*: the data's frames one after the
other, each raw or compressed on its own (codec.py), then this table. The
manifest pins the table by its sha256, so every frame and every chunk can
be verified on its own when it is fetched lazily: a frame's stored bytes
against the frame's sha256 before they reach a decompressor, each chunk's
decoded bytes against the chunk's sha256 before it is marked present.

Version 1 (uncompressed blobs, the format before compression) has no
frames: the stored blob is the data itself, so each chunk is a raw frame
of its own, verified by the chunk's digest. Version 3 is a *span table*:
the stored blob is an ordinary gzip layer, unchanged, and the data its
uncompressed tar; each span of the stream (gzipspans.py) is a chunk and a
frame of its own, and its checkpoint follows the frames. The stored bytes
start after the gzip header, so v3 frames run on from the first one's
offset, not from 0. The checkpoints' windows live in a blob of their own,
the *window blob*, one zstd frame each, pinned by their sha256 here: a
reader fetches a window only to enter a span it has nothing before
(the cache: ``CachedBlob._before``), not with the table. All three
versions are read.

    header:  magic "ERFSDCT1", "ERFSDCT2" or "ERFSDCT3", u32 chunk count,
             u32 frame count (v1: 0)
    chunk:   u64 offset, u32 length, u32 reserved, 32-byte sha256 of its data
    frame:   u32 first chunk, u32 chunks, u64 stored offset, u32 stored length,
             u8 codec, 3 reserved, 32-byte sha256 of its stored bytes     (v2, v3)
    checkpoint: u8 bits, u8 byte, 2 reserved, u32 window length,
             u64 its offset in the window blob, u32 its stored length,
             32-byte sha256 of its stored bytes                     (v3, one per frame)
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import struct
from collections.abc import Sequence

from ..errors import CorruptImage, IntegrityError
from . import codec
from .gzipspans import WINDOW, Checkpoint, Span

MAGIC_V1 = b"ERFSDCT1"
MAGIC_V2 = b"ERFSDCT2"
MAGIC_V3 = b"ERFSDCT3"
MAGICS = {MAGIC_V1: 1, MAGIC_V2: 2, MAGIC_V3: 3}
HEADER = struct.Struct("<8sII")
ENTRY = struct.Struct("<QI4x32s")
FRAME = struct.Struct("<IIQIB3x32s")
CHECKPOINT = struct.Struct("<BB2xIQI32s")
assert (HEADER.size, ENTRY.size, FRAME.size, CHECKPOINT.size) == (16, 48, 56, 52)

MAX_FRAME_BYTES = 1 << 30  # what one frame may decode to: the largest chunk
MAX_STORED_WINDOW = WINDOW + 1024  # a zstd frame of 32 KiB is never larger


@dataclasses.dataclass(frozen=True)
class ChunkEntry:
    offset: int
    length: int
    digest: bytes  # raw sha256 of the chunk's data, padding included

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclasses.dataclass(frozen=True)
class Frame:
    first: int  # its chunks are [first, stop)
    stop: int
    offset: int  # the data it decodes to is [offset, offset + length)
    length: int
    stored_offset: int  # where its stored bytes are in the stored blob
    stored_length: int
    codec: int
    stored_digest: bytes | None  # None: a v1 chunk, verified by its own digest

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def stored_end(self) -> int:
        return self.stored_offset + self.stored_length

    @property
    def chunks(self) -> range:
        return range(self.first, self.stop)


@dataclasses.dataclass(frozen=True)
class SpanCheckpoint:
    """Where a span is entered (gzipspans.Checkpoint) without its window: the window is
    the ``window_length`` bytes of data before the span, zstd-coded in the window blob."""

    bits: int
    byte: int
    window_length: int
    window_offset: int  # in the window blob
    window_stored_length: int  # 0: the span needs no window
    window_digest: bytes  # sha256 of the stored window

    def entered(self, window: bytes) -> Checkpoint:
        """The checkpoint, given the data before the span (at least its window)."""
        if len(window) < self.window_length:
            raise IntegrityError(f"a span needs {self.window_length} bytes before it, "
                                 f"given {len(window)}")
        return Checkpoint(self.bits, self.byte,
                          window[len(window) - self.window_length:] if self.window_length
                          else b"")


@dataclasses.dataclass(frozen=True)
class ChunkTable:
    entries: tuple[ChunkEntry, ...]
    frames: tuple[Frame, ...] = ()  # empty: version 1, one raw frame per chunk
    checkpoints: tuple[SpanCheckpoint, ...] = ()  # one per frame: version 3, a span table
    version: int = dataclasses.field(init=False, default=1)

    def __post_init__(self) -> None:
        if not self.frames:
            object.__setattr__(self, "frames", tuple(
                Frame(i, i + 1, e.offset, e.length, e.offset, e.length, codec.RAW, None)
                for i, e in enumerate(self.entries)))
            object.__setattr__(self, "version", 1)
        else:
            object.__setattr__(self, "version", 3 if self.checkpoints else 2)

    @property
    def data_size(self) -> int:
        return self.entries[-1].end if self.entries else 0

    @property
    def stored_size(self) -> int:
        """Bytes of frames in the stored blob: where this table begins."""
        return self.frames[-1].stored_end if self.frames else 0

    @property
    def window_blob_size(self) -> int:
        """Bytes of the window blob a span table's checkpoints tile."""
        return sum(c.window_stored_length for c in self.checkpoints)

    @property
    def compressed(self) -> bool:
        return self.version >= 2

    def pack(self) -> bytes:
        chunks = b"".join(ENTRY.pack(e.offset, e.length, e.digest) for e in self.entries)
        if self.version == 1:
            return HEADER.pack(MAGIC_V1, len(self.entries), 0) + chunks
        frames = b"".join(FRAME.pack(f.first, f.stop - f.first, f.stored_offset,
                                     f.stored_length, f.codec, f.stored_digest)
                          for f in self.frames)
        if self.version == 2:
            return HEADER.pack(MAGIC_V2, len(self.entries), len(self.frames)) + chunks + frames
        points = b"".join(CHECKPOINT.pack(c.bits, c.byte, c.window_length, c.window_offset,
                                          c.window_stored_length, c.window_digest)
                          for c in self.checkpoints)
        return HEADER.pack(MAGIC_V3, len(self.entries), len(self.frames)) + chunks + frames \
            + points

    @classmethod
    def unpack(cls, data: bytes, data_size: int | None = None,
               stored_size: int | None = None) -> ChunkTable:
        """Decode and check: chunks contiguous from 0, frames contiguous over them and
        over the stored blob, each non-empty, ending at ``data_size`` and ``stored_size``."""
        if len(data) < HEADER.size:
            raise CorruptImage("chunk table shorter than its header")
        magic, count, frame_count = HEADER.unpack_from(data)
        version = MAGICS.get(magic)
        if version is None or (version == 1 and frame_count) or (version == 3 and
                                                                 frame_count != count):
            raise CorruptImage("chunk table has a bad magic")
        fixed = HEADER.size + count * ENTRY.size + frame_count * FRAME.size
        if len(data) != fixed + (frame_count * CHECKPOINT.size if version == 3 else 0):
            raise CorruptImage(f"chunk table of {len(data)} bytes cannot hold {count} chunks "
                               f"and {frame_count} frames")
        entries, expect = [], 0
        for i in range(count):
            offset, length, digest = ENTRY.unpack_from(data, HEADER.size + i * ENTRY.size)
            if offset != expect or length == 0:
                raise CorruptImage(f"chunk table entry {i} at {offset}+{length} is not "
                                   f"contiguous (expected offset {expect})")
            entries.append(ChunkEntry(offset, length, digest))
            expect = offset + length
        frames = _unpack_frames(data, HEADER.size + count * ENTRY.size, frame_count, entries,
                                spans=version == 3) if version >= 2 else ()
        checkpoints = _unpack_checkpoints(data, fixed, frame_count) if version == 3 else ()
        table = cls(tuple(entries), tuple(frames), checkpoints)
        if data_size is not None and table.data_size != data_size:
            raise CorruptImage(f"chunk table covers {table.data_size} bytes, blob data is "
                               f"{data_size}")
        if stored_size is not None and table.stored_size != stored_size:
            raise CorruptImage(f"chunk table's frames cover {table.stored_size} stored bytes, "
                               f"the table begins at {stored_size}")
        return table

    # -- mapping ---------------------------------------------------------------

    def covering(self, start: int, end: int) -> range:
        """Indexes of the entries that overlap [start, end)."""
        if start >= end or not self.entries:
            return range(0)
        offsets = self._index("_offsets", lambda: [e.offset for e in self.entries])
        first = bisect.bisect_right(offsets, start) - 1
        last = bisect.bisect_left(offsets, end)
        return range(max(first, 0), last)

    def frame_of(self, chunk: int) -> int:
        """The index of the frame that holds chunk ``chunk``."""
        if self.version == 1:
            return chunk
        firsts = self._index("_firsts", lambda: [f.first for f in self.frames])
        return bisect.bisect_right(firsts, chunk) - 1

    def _index(self, name: str, build):
        cached = self.__dict__.get(name)
        if cached is None:
            cached = build()
            object.__setattr__(self, name, cached)
        return cached

    def present_bytes(self, present: bytes | bytearray) -> int:
        """Bytes in the entries whose flag in ``present`` (one byte per entry) is set."""
        return sum(e.length for e, flag in zip(self.entries, present, strict=True) if flag)

    def stored_bytes(self, present: bytes | bytearray) -> int:
        """Stored bytes of the frames all of whose chunks are flagged in ``present``."""
        return sum(f.stored_length for f in self.frames if all(present[f.first:f.stop]))

    # -- verification ----------------------------------------------------------

    def verify(self, index: int, data: bytes) -> bool:
        entry = self.entries[index]
        return len(data) == entry.length and hashlib.sha256(data).digest() == entry.digest

    def open_window(self, index: int, stored: bytes) -> bytes:
        """Span ``index``'s window from its stored bytes in the window blob, checked."""
        point = self.checkpoints[index]
        if len(stored) != point.window_stored_length or \
                hashlib.sha256(stored).digest() != point.window_digest:
            raise IntegrityError(f"window of the span at {self.frames[index].offset} does not "
                                 "match its digest")
        return codec.decode_window(stored, point.window_length)

    def open_frame(self, index: int, stored: bytes, before: bytes = b"") -> bytes:
        """A frame's data from its stored bytes, every digest checked; else IntegrityError.
        A span enters at its checkpoint: ``before`` ends with the data before it (its
        window: from ``open_window``, or data already verified)."""
        frame = self.frames[index]
        # the stored digest keeps a lying source from the decompressor; a raw frame is
        # its chunks' bytes, which their own digests check below (one hash, not two)
        if frame.stored_digest is not None and frame.codec != codec.RAW:
            if len(stored) != frame.stored_length or \
                    hashlib.sha256(stored).digest() != frame.stored_digest:
                raise IntegrityError(f"frame at stored byte {frame.stored_offset} does not "
                                     "match its digest")
        data = codec.decode(frame.codec, stored, frame.length,
                            self.checkpoints[index].entered(before) if self.checkpoints
                            else None)
        for i in frame.chunks:
            entry = self.entries[i]
            piece = data[entry.offset - frame.offset:entry.end - frame.offset]
            if hashlib.sha256(piece).digest() != entry.digest:
                raise IntegrityError(f"chunk at {entry.offset} does not match its digest")
        return data


def _unpack_frames(data: bytes, base: int, count: int, entries: list[ChunkEntry], *,
                   spans: bool) -> list[Frame]:
    """Frames contiguous over the chunks and the stored blob; a span table's are one per
    chunk, gzip spans all, and begin where the first one says (after the gzip header)."""
    frames, chunk, stored = [], 0, None if spans else 0
    for i in range(count):
        first, chunks, stored_offset, stored_length, code, digest = FRAME.unpack_from(
            data, base + i * FRAME.size)
        if first != chunk or chunks == 0 or first + chunks > len(entries) \
                or (spans and chunks != 1):
            raise CorruptImage(f"chunk table frame {i} holds chunks {first}+{chunks}, not "
                               f"from chunk {chunk}")
        if (stored is not None and stored_offset != stored) or stored_length == 0:
            raise CorruptImage(f"chunk table frame {i} at stored byte {stored_offset} is not "
                               f"contiguous (expected {stored})")
        if code not in codec.NAMES:
            raise CorruptImage(f"chunk table frame {i} has unknown codec {code}")
        if spans != (code == codec.GZIP_SPAN):
            raise CorruptImage(f"chunk table frame {i} is {codec.NAMES[code]}: a "
                               f"{'span' if spans else 'blob'} table cannot hold it")
        offset = entries[first].offset
        length = entries[first + chunks - 1].end - offset
        if length > MAX_FRAME_BYTES or (code == codec.RAW and stored_length != length):
            raise CorruptImage(f"chunk table frame {i} of {length} bytes stored in "
                               f"{stored_length} cannot be {codec.NAMES[code]}")
        frames.append(Frame(first, first + chunks, offset, length, stored_offset,
                            stored_length, code, digest))
        chunk, stored = first + chunks, stored_offset + stored_length
    if chunk != len(entries):
        raise CorruptImage(f"chunk table frames hold {chunk} of {len(entries)} chunks")
    return frames


def _unpack_checkpoints(data: bytes, base: int, count: int) -> tuple[SpanCheckpoint, ...]:
    """Checkpoints whose windows tile the window blob from 0, one after the other."""
    points, at = [], 0
    for i in range(count):
        point = SpanCheckpoint(*CHECKPOINT.unpack_from(data, base + i * CHECKPOINT.size))
        if point.bits > 7 or (point.byte and not point.bits) \
                or point.window_length > WINDOW or point.window_offset != at \
                or point.window_stored_length > MAX_STORED_WINDOW \
                or (point.window_stored_length == 0) != (point.window_length == 0):
            raise CorruptImage(f"span table checkpoint {i} is not one a gzip stream has")
        points.append(point)
        at += point.window_stored_length
    return tuple(points)


def span_table(spans: Sequence[Span]) -> tuple[ChunkTable, bytes]:
    """The chunk table (version 3) of a gzip stream cut into ``spans``, and its window
    blob."""
    windows, points, at = [], [], 0
    for span in spans:
        stored = codec.encode_window(span.checkpoint.window)
        points.append(SpanCheckpoint(span.checkpoint.bits, span.checkpoint.byte,
                                     len(span.checkpoint.window), at, len(stored),
                                     hashlib.sha256(stored).digest()))
        windows.append(stored)
        at += len(stored)
    table = ChunkTable(
        tuple(ChunkEntry(s.out_offset, s.out_length, s.out_digest) for s in spans),
        tuple(Frame(i, i + 1, s.out_offset, s.out_length, s.in_offset, s.in_length,
                    codec.GZIP_SPAN, s.in_digest) for i, s in enumerate(spans)),
        tuple(points))
    return table, b"".join(windows)
