"""A blob's chunk table (chunktable.py): round trips, covering, refusals."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erofsd.erofs.chunktable import ChunkEntry, ChunkTable
from erofsd.errors import CorruptImage


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
