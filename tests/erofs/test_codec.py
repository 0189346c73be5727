"""How a frame is coded (codec.py): round trips, and every lie a frame can tell refused."""

from __future__ import annotations

import os

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from erofsd.erofs import codec
from erofsd.errors import IntegrityError, InvalidArgument

TEXT = b"".join(b"line %d of a text file that compresses\n" % i for i in range(2000))


@given(st.binary(max_size=20_000), st.sampled_from([1, 3, 6, 19]))
def test_every_frame_decodes_to_what_was_encoded(data, level):
    code, stored = codec.encode(data, level)
    assert code in (codec.RAW, codec.ZSTD)
    assert len(stored) <= len(data)
    assert codec.decode(code, stored, len(data)) == data


def test_text_is_compressed_and_noise_stays_raw():
    code, stored = codec.encode(TEXT, 6)
    assert code == codec.ZSTD and len(stored) < len(TEXT) // 10
    noise = os.urandom(65536)
    assert codec.encode(noise, 6) == (codec.RAW, noise)


def test_a_frame_that_decodes_to_other_than_its_table_says_is_refused():
    _, stored = codec.encode(TEXT, 3)
    with pytest.raises(IntegrityError, match=f"declares {len(TEXT)} bytes, its table says 4096"):
        codec.decode(codec.ZSTD, stored, 4096)  # more than the table says: never allocated
    with pytest.raises(IntegrityError, match="its table says 100000"):
        codec.decode(codec.ZSTD, stored, 100_000)
    with pytest.raises(IntegrityError, match="raw frame of 3 bytes"):
        codec.decode(codec.RAW, b"abc", 4)


def test_a_bomb_is_refused_before_it_is_decoded():
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(1 << 30))
    assert len(bomb) < 64 * 1024
    with pytest.raises(IntegrityError, match="declares 1073741824 bytes"):
        codec.decode(codec.ZSTD, bomb, 4096)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(TEXT)
    with pytest.raises(IntegrityError, match="declares"):
        codec.decode(codec.ZSTD, unsized, len(TEXT))


def test_damaged_frames_are_integrity_errors():
    _, stored = codec.encode(TEXT, 3)
    for damaged in (stored[:-7], b"\0" * 20, stored[:4] + bytes(len(stored) - 4), b""):
        with pytest.raises(IntegrityError):
            codec.decode(codec.ZSTD, damaged, len(TEXT))
    with pytest.raises(IntegrityError, match="unknown codec 9"):
        codec.decode(9, stored, len(TEXT))


def test_compression_settings_are_checked_and_named():
    assert codec.parse_compression("none") is None
    assert codec.parse_compression("zstd") == codec.Compression()
    assert codec.parse_compression("ZSTD:19").level == 19
    assert codec.Compression(3, 0).name == "zstd3-f0"
    for bad, message in (("gzip", "unknown compression"), ("zstd:x", "not a number"),
                         ("zstd:0", "from 1 to 22"), ("none:3", "unknown compression")):
        with pytest.raises(InvalidArgument, match=message):
            codec.parse_compression(bad)
    with pytest.raises(InvalidArgument, match="frame size"):
        codec.Compression(frame_size=-1)
