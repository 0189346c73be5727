"""Directory blocks (dirents.py): packed and parsed back, and refused when bad."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erofsd.erofs import dirents
from erofsd.erofs.ondisk import (
    DIRENT,
)
from erofsd.errors import CorruptImage

names = st.binary(min_size=1, max_size=255).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b".."))


@given(st.lists(names, min_size=1, max_size=400, unique=True))
def test_directory_blocks_round_trip(name_list):
    entries = sorted((dirents.Dirent(n, i + 100, 1) for i, n in enumerate(name_list)),
                     key=lambda e: e.name)
    blocks = dirents.pack_blocks(entries, 4096)
    assert all(len(b) <= 4096 for b in blocks)
    assert sum(len(b) for b in blocks[:-1]) + len(blocks[-1]) <= len(blocks) * 4096
    assert dirents.directory_size([len(e.name) for e in entries], 4096) == \
        4096 * (len(blocks) - 1) + len(blocks[-1])
    parsed = [d for b in blocks for d in dirents.parse_block(b)]
    assert parsed == entries


@pytest.mark.parametrize("block", [b"", b"\0" * 12, DIRENT.pack(1, 5, 1) + b"abc",
                                   DIRENT.pack(1, 24, 1) + DIRENT.pack(2, 12, 1) + b"ab"])
def test_bad_directory_blocks_are_corrupt(block):
    with pytest.raises(CorruptImage):
        dirents.parse_block(block)
