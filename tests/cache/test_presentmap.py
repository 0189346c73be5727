"""The present-map file of a cached blob."""

from __future__ import annotations

from erofsd.cache.presentmap import HEADER, HEADER_SIZE


def test_present_map_header_is_one_block():
    assert HEADER.size <= HEADER_SIZE == 4096
