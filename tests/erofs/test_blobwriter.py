"""The blob writer (blobwriter.py): compressed blobs give the kernel exactly the old bytes."""

from __future__ import annotations

import os

import pytest

from blobkit import CHUNK, files, write
from erofsd.erofs import codec
from erofsd.erofs.readat import BytesReadAt
from erofsd.erofs.storedblob import DecodedBlob


@pytest.mark.parametrize("compression", [codec.Compression(), codec.Compression(3, 0),
                                         codec.Compression(1, 1 << 20)])
def test_compressed_blobs_hold_the_same_data_in_fewer_bytes(compression):
    data = files(1)
    plain, plain_blob, plain_table, plain_addresses = write(data, None)
    info, blob, table, addresses = write(data, compression)
    assert not plain.compressed and plain_table.version == 1
    assert info.compressed and table.version == 2
    # the kernel's view does not change: same chunks at the same block addresses
    assert addresses == plain_addresses and table.entries == plain_table.entries
    assert info.data_size == plain.data_size
    decoded = DecodedBlob(BytesReadAt(blob), table)
    assert decoded.read_at(0, info.data_size) == plain_blob[:plain.data_size]
    assert info.size < plain.size * 0.75
    codecs = {f.codec for f in table.frames}
    if compression.frame_size <= CHUNK:  # the noise's chunks in frames of their own
        assert codecs == {codec.RAW, codec.ZSTD}  # did not shrink: stored raw
    else:
        assert codecs == {codec.ZSTD}


def test_small_chunks_share_frames_up_to_the_frame_size():
    frame_size = 16 * 1024
    _, _, table, _ = write(files(2), codec.Compression(frame_size=frame_size))
    for frame in table.frames:
        lengths = [table.entries[i].length for i in frame.chunks]
        if len(lengths) > 1:
            assert frame.length <= frame_size
        else:  # alone: it was large, or the next one did not fit
            nxt = frame.stop
            assert lengths[0] >= frame_size or nxt == len(table.entries) or \
                lengths[0] + table.entries[nxt].length > frame_size
    assert any(len(f.chunks) > 1 for f in table.frames)
    _, _, alone, _ = write(files(2), codec.Compression(frame_size=0))
    assert all(len(f.chunks) == 1 for f in alone.frames)


def test_the_digest_depends_on_the_data_not_on_the_threads():
    data = files(3)
    digests = {write(data, codec.Compression())[0].digest for _ in range(3)}
    assert len(digests) == 1
    assert write(data, codec.Compression(level=3))[0].digest not in digests


def test_an_empty_layer_is_an_empty_blob():
    info, blob, table, _ = write([], codec.Compression())
    assert (info.data_size, table.entries, info.compressed) == (0, (), False)
    assert os.path.basename(info.path) == ""
