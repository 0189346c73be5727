"""A blob's chunk table (chunktable.py): round trips, covering, frames, refusals."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erofsd.erofs import codec
from erofsd.erofs.chunktable import FRAME, ChunkEntry, ChunkTable, Frame, span_table
from erofsd.erofs.gzipspans import WINDOW, GzipIndexer
from erofsd.errors import CorruptImage, IntegrityError


@given(st.lists(st.integers(1, 300), max_size=50))
def test_chunk_table_round_trip_and_covering(block_counts):
    entries, offset = [], 0
    for n in block_counts:
        entries.append(ChunkEntry(offset, n * 4096, os.urandom(32)))
        offset += n * 4096
    table = ChunkTable(tuple(entries))
    assert ChunkTable.unpack(table.pack(), offset) == table
    for i, e in enumerate(entries):
        assert list(table.covering(e.offset, e.offset + 1)) == [i]
        assert list(table.covering(e.offset, e.end)) == [i]
    if entries:
        assert list(table.covering(0, offset)) == list(range(len(entries)))


def test_chunk_table_rejects_gaps_and_bad_sizes():
    good = ChunkTable((ChunkEntry(0, 4096, bytes(32)), ChunkEntry(4096, 4096, bytes(32))))
    gap = ChunkTable((ChunkEntry(0, 4096, bytes(32)), ChunkEntry(8192, 4096, bytes(32))))
    with pytest.raises(CorruptImage, match="contiguous"):
        ChunkTable.unpack(gap.pack())
    with pytest.raises(CorruptImage, match="covers"):
        ChunkTable.unpack(good.pack(), 4096)
    with pytest.raises(CorruptImage):
        ChunkTable.unpack(good.pack()[:-1])
    with pytest.raises(CorruptImage, match="magic"):
        ChunkTable.unpack(b"X" + good.pack()[1:])


def _framed(blocks: list[int], sizes: list[int]) -> tuple[ChunkTable, bytes]:
    """A v2 table whose chunks (``blocks`` blocks each, distinct bytes) go into frames of
    ``sizes`` chunks each, every frame zstd-coded; and the stored bytes of those frames."""
    data = b"".join(bytes([i + 1]) * (n * 4096) for i, n in enumerate(blocks))
    entries, offset = [], 0
    for n in blocks:
        piece = data[offset:offset + n * 4096]
        entries.append(ChunkEntry(offset, len(piece), hashlib.sha256(piece).digest()))
        offset += len(piece)
    frames, stored, first = [], b"", 0
    for count in sizes:
        start, end = entries[first].offset, entries[first + count - 1].end
        code, packed = codec.encode(data[start:end], 3)
        frames.append(Frame(first, first + count, start, end - start, len(stored), len(packed),
                            code, hashlib.sha256(packed).digest()))
        stored += packed
        first += count
    return ChunkTable(tuple(entries), tuple(frames)), stored


@given(st.lists(st.integers(1, 8), min_size=1, max_size=30), st.randoms())
def test_framed_table_round_trip_and_frame_of(blocks, rng):
    sizes, left = [], len(blocks)
    while left:
        sizes.append(rng.randint(1, left))
        left -= sizes[-1]
    table, stored = _framed(blocks, sizes)
    again = ChunkTable.unpack(table.pack(), table.data_size, len(stored))
    assert again == table and again.version == 2 and again.stored_size == len(stored)
    for index, frame in enumerate(table.frames):
        assert [table.frame_of(i) for i in frame.chunks] == [index] * len(frame.chunks)
        piece = stored[frame.stored_offset:frame.stored_end]
        data = table.open_frame(index, piece)
        assert all(table.verify(i, data[table.entries[i].offset - frame.offset:
                                         table.entries[i].end - frame.offset])
                   for i in frame.chunks)


def test_a_version_1_table_is_one_raw_frame_per_chunk():
    table = ChunkTable((ChunkEntry(0, 4096, hashlib.sha256(bytes(4096)).digest()),))
    assert table.version == 1 and not table.compressed and table.stored_size == 4096
    assert table.pack()[:8] == b"ERFSDCT1" and ChunkTable.unpack(table.pack()) == table
    assert table.open_frame(0, bytes(4096)) == bytes(4096)
    with pytest.raises(IntegrityError, match="chunk at 0"):
        table.open_frame(0, b"\1" * 4096)


def test_a_frame_is_checked_before_and_after_it_is_decoded():
    table, stored = _framed([2, 1, 3], [2, 1])
    frame = table.frames[0]
    piece = stored[frame.stored_offset:frame.stored_end]
    with pytest.raises(IntegrityError, match="stored byte 0 does not match"):
        table.open_frame(0, bytes([piece[0] ^ 1]) + piece[1:])
    with pytest.raises(IntegrityError, match="does not match"):
        table.open_frame(0, piece[:-1])
    # a table that lies about what a frame's chunks hold, with the stored digest right
    liar = ChunkTable((dataclasses.replace(table.entries[0], digest=bytes(32)),
                       *table.entries[1:]), table.frames)
    with pytest.raises(IntegrityError, match="chunk at 0 does not match"):
        liar.open_frame(0, piece)


def test_bad_frames_are_refused():
    table, stored = _framed([1, 1, 1], [2, 1])
    raw = table.pack()
    frames_at = 16 + 3 * 48

    def patched(index: int, **fields) -> bytes:
        values = dict(zip(("first", "count", "stored_offset", "stored_length", "codec",
                           "digest"), FRAME.unpack_from(raw, frames_at + index * 56), strict=True))
        values.update(fields)
        frame = FRAME.pack(*values.values())
        at = frames_at + index * 56
        return raw[:at] + frame + raw[at + 56:]

    for damaged, message in (
            (patched(1, first=1), "not from chunk 2"),
            (patched(0, count=0), "not from chunk 0"),
            (patched(1, count=2), "not from chunk 2"),
            (patched(1, stored_offset=0), "not contiguous"),
            (patched(0, stored_length=0), "not contiguous"),
            (patched(0, codec=7), "unknown codec 7"),
            (patched(0, codec=codec.RAW), "cannot be raw"),
            (raw[:12] + (1).to_bytes(4, "little") + raw[16:frames_at + 56], "hold 2 of 3")):
        with pytest.raises(CorruptImage, match=message):
            ChunkTable.unpack(damaged)
    with pytest.raises(CorruptImage, match="the table begins at 7"):
        ChunkTable.unpack(raw, table.data_size, 7)


def _span_table(raw: bytes, span_size: int = 64 << 10) -> tuple[ChunkTable, bytes, bytes]:
    """(the span table, its window blob, the gzip stream)."""
    gz = gzip.compress(raw, mtime=0)
    indexer = GzipIndexer(io.BytesIO(gz).read, span_size)
    while indexer.read(1 << 20):
        pass
    return *span_table(indexer.spans), gz


def test_a_span_table_round_trips_and_opens_every_span_of_the_layer():
    raw = b"".join(f"line {i} of a text that gzip likes\n".encode() for i in range(60_000))
    table, windows, gz = _span_table(raw + os.urandom(200_000))
    assert table.version == 3 and len(table.frames) > 3
    back = ChunkTable.unpack(table.pack(), len(raw) + 200_000, len(gz))
    assert back == table and table.window_blob_size == len(windows)
    assert table.frames[0].stored_offset == 10  # after the gzip header

    def window(i: int) -> bytes:
        point = back.checkpoints[i]
        return back.open_window(i, windows[point.window_offset:][:point.window_stored_length])

    alone = [back.open_frame(i, gz[f.stored_offset:f.stored_end], window(i))
             for i, f in enumerate(back.frames)]
    data = b"".join(alone)
    assert data == raw + data[len(raw):] and len(data) == len(raw) + 200_000
    # the data before a span serves as its window too
    assert all(back.open_frame(i, gz[f.stored_offset:f.stored_end], data[:f.offset]) == alone[i]
               for i, f in enumerate(back.frames))
    # a window keeps only what its span reads: a fraction of 32 KiB, zstd-coded
    assert len(windows) < len(table.frames) * WINDOW // 8


def test_a_span_table_refuses_damage_and_a_span_refuses_other_bytes():
    table, windows, gz = _span_table(b"".join(b"%d\n" % i for i in range(200_000)))
    packed = table.pack()
    points_at = 16 + len(table.entries) * (48 + 56)
    for damaged, message in (
            (packed[:points_at] + bytes([9]) + packed[points_at + 1:], "not one a gzip"),
            (packed[:-1], "cannot hold"),
            (packed + b"x", "cannot hold"),
            (packed[:8 + 4] + (1).to_bytes(4, "little") + packed[16:], "bad magic")):
        with pytest.raises(CorruptImage, match=message):
            ChunkTable.unpack(damaged)
    second, point = table.frames[1], table.checkpoints[1]
    stored = bytearray(gz[second.stored_offset:second.stored_end])
    stored_window = windows[point.window_offset:][:point.window_stored_length]
    window = table.open_window(1, stored_window)
    assert 0 < point.window_length == len(window) <= WINDOW
    with pytest.raises(IntegrityError, match="window .* digest"):
        table.open_window(1, stored_window[:-1] + bytes([stored_window[-1] ^ 1]))
    with pytest.raises(IntegrityError, match="needs"):
        table.open_frame(1, bytes(stored), window[1:])
    with pytest.raises(IntegrityError, match="digest|inflate"):  # another window, other bytes
        table.open_frame(1, bytes(stored), bytes(len(window)))
    stored[len(stored) // 2] ^= 0x40
    with pytest.raises(IntegrityError, match="digest"):
        table.open_frame(1, bytes(stored), window)
    mixed = ChunkTable(table.entries, (dataclasses.replace(table.frames[0], codec=codec.ZSTD),
                                       *table.frames[1:]), table.checkpoints)
    with pytest.raises(CorruptImage, match="span table cannot hold"):
        ChunkTable.unpack(mixed.pack())
