"""Reading a compressed blob in place (storedblob.py): any range, verified, a bounded memory."""

from __future__ import annotations

import random

import pytest

from blobkit import files, write
from erofsd.erofs import codec, storedblob
from erofsd.erofs.readat import BytesReadAt
from erofsd.errors import IntegrityError


@pytest.fixture(scope="module")
def blobs():
    data = files(7)
    plain, plain_blob, _, _ = write(data, None)
    info, blob, table, _ = write(data, codec.Compression(frame_size=16 * 1024))
    return plain_blob[:plain.data_size], blob, table


def test_any_range_reads_the_uncompressed_data(blobs):
    data, blob, table = blobs
    decoded = storedblob.DecodedBlob(BytesReadAt(blob), table)
    rng = random.Random(1)
    for _ in range(300):
        offset = rng.randrange(len(data))
        length = rng.choice([1, 4096, rng.randrange(1, 200_000)])
        assert decoded.read_at(offset, length) == data[offset:offset + length]
    assert decoded.read_at(len(data), 10) == b"" and decoded.size == len(data)


def test_a_damaged_frame_is_an_error_and_its_neighbours_still_read(blobs):
    data, blob, table = blobs
    victim = next(f for f in table.frames if f.codec == codec.ZSTD and f.offset > 0)
    damaged = bytearray(blob)
    damaged[victim.stored_offset + victim.stored_length // 2] ^= 0x40
    decoded = storedblob.DecodedBlob(BytesReadAt(bytes(damaged)), table)
    for _ in range(2):  # nothing wrong is kept for the second time either
        with pytest.raises(IntegrityError):
            decoded.read_at(victim.offset, 1)
    before = victim.offset - 1
    assert decoded.read_at(before, 1) == data[before:victim.offset]
    assert decoded.read_at(victim.end, 100) == data[victim.end:victim.end + 100]


def test_decoded_frames_kept_stay_under_the_bound(blobs, monkeypatch):
    data, blob, table = blobs
    monkeypatch.setattr(storedblob, "KEEP_BYTES", 64 * 1024)
    decoded = storedblob.DecodedBlob(BytesReadAt(blob), table)
    assert decoded.read_at(0, len(data)) == data
    assert sum(len(decoded.frame(i)) for i in range(len(table.frames))) == len(data)
    kept = decoded._frames
    assert kept.capacity == 64 * 1024 and 0 < len(kept) < len(table.frames)
