"""A cached compressed blob: frames fetched compressed, cached uncompressed, never a lie kept."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import zstandard

from cachekit import CountingSource, compressed_image, open_blob
from erofsd.erofs import codec
from erofsd.erofs.chunktable import ChunkTable
from erofsd.errors import IntegrityError
from erofsd.oci.descriptor import Descriptor, sha256_digest
from erofsd.oci.image import BlobRef
from erofsd.oci.mediatypes import EROFSD_BLOB
from erofsd.oci.source import LayoutSource

CHUNK = 65536


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return compressed_image(tmp_path_factory.mktemp("zimg"))


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    return compressed_image(tmp_path_factory.mktemp("zbatch"), frame_size=16 * 1024)


def stored_span(image, frames: range) -> tuple[int, int]:
    first, last = image["table"].frames[frames.start], image["table"].frames[frames.stop - 1]
    return first.stored_offset, last.stored_end - first.stored_offset


def test_a_miss_fetches_its_frame_compressed_and_caches_it_uncompressed(image, tmp_path):
    cache, blob, source = open_blob(image, tmp_path)
    ref, table = image["ref"], image["table"]
    assert source.requests == [(ref.table_offset, ref.table_size)]
    frame = table.frames[3]
    assert frame.codec == codec.ZSTD and frame.stored_length < CHUNK // 2
    assert blob.read_at(3 * CHUNK + 10, 100) == image["data"][3 * CHUNK + 10:3 * CHUNK + 110]
    assert source.requests[1:] == [stored_span(image, range(3, 4))]
    assert blob.stats.fetched_bytes == ref.table_size + frame.stored_length
    assert blob.cached_bytes == CHUNK  # the kernel's bytes
    with open(blob.data_path, "rb") as f:  # the cache file holds them uncompressed
        f.seek(3 * CHUNK)
        assert f.read(CHUNK) == image["data"][3 * CHUNK:4 * CHUNK]
    cache.release(blob)


def test_merging_and_readahead_count_compressed_bytes(image, tmp_path):
    frames = image["table"].frames
    three = sum(f.stored_length for f in frames[:3])
    cache, blob, source = open_blob(image, tmp_path / "merge", merge_limit=three)
    assert blob.read_at(0, 7 * CHUNK) == image["data"][:7 * CHUNK]
    requests = source.requests[1:]
    bounds = {f.stored_offset for f in frames} | {frames[6].stored_end}
    assert requests[0] == stored_span(image, range(0, 3))  # merged, up to the limit
    assert 3 <= len(requests) <= 4 and all(length <= three for _, length in requests)
    assert all(at in bounds and at + length in bounds for at, length in requests)
    assert [at for at, _ in requests[1:]] == [at + n for at, n in requests[:-1]]
    assert requests[-1][0] + requests[-1][1] == frames[6].stored_end  # all 7, in order
    cache.release(blob)
    cache, blob, source = open_blob(image, tmp_path / "ahead", readahead=three)
    blob.read_at(0, 10)  # the start begins a stream: it reads ahead in stored bytes, so
    (request,) = source.requests[1:]  # `three` (less than a chunk of data) spans frames
    assert request[0] == 0 and request[1] in {f.stored_end for f in frames[3:]}
    assert request[1] <= 2 * three
    cache.release(blob)


def test_small_files_share_a_frame(batched, tmp_path):
    table = batched["table"]
    small = [f for f in table.frames if len(f.chunks) > 1]
    assert small and all(f.length <= 16 * 1024 for f in small)
    frame = small[0]
    second = table.entries[frame.first + 1]
    cache, blob, source = open_blob(batched, tmp_path)
    assert blob.read_at(second.offset, 100) == batched["data"][second.offset:second.offset + 100]
    assert source.requests[1:] == [(frame.stored_offset, frame.stored_length)]
    assert blob.is_present(table.entries[frame.first].offset, 1)  # its neighbour came too
    cache.release(blob)


def test_a_lying_source_is_caught_before_the_decompressor(image, tmp_path):
    liar = CountingSource(LayoutSource(image["layout"]))
    cache, blob, _ = open_blob(image, tmp_path, source=liar)
    liar.corrupt_left = 2  # the next two answers are damaged
    assert blob.read_at(5 * CHUNK, CHUNK) == image["data"][5 * CHUNK:6 * CHUNK]
    assert len(liar.requests) == 4  # the table, two lies, the truth
    liar.corrupt_left = 10**9
    with pytest.raises(IntegrityError, match="failed verification 4 times"):
        blob.read_at(9 * CHUNK, 10)
    assert not blob.is_present(9 * CHUNK, 1)
    cache.release(blob)


class BytesSource:
    name = "hostile image"

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read_range(self, digest, offset, length):
        return self.data[offset:offset + length]

    def blob_size(self, digest):
        return len(self.data)


def hostile(image, replace: dict[int, bytes]) -> dict:
    """The image's blob with some frames' stored bytes replaced (zstd-coded), and a table and
    descriptor that pin the new bytes: a blob whose author lies, every digest consistent."""
    table, ref = image["table"], image["ref"]
    source = image["layout"].blob_path(ref.digest).read_bytes()
    frames, stored = [], b""
    for i, frame in enumerate(table.frames):
        piece = replace.get(i, source[frame.stored_offset:frame.stored_end])
        code = codec.ZSTD if i in replace else frame.codec
        frames.append(dataclasses.replace(frame, stored_offset=len(stored),
                                          stored_length=len(piece), codec=code,
                                          stored_digest=hashlib.sha256(piece).digest()))
        stored += piece
    raw_table = ChunkTable(table.entries, tuple(frames)).pack()
    blob = stored + raw_table
    descriptor = Descriptor(EROFSD_BLOB, sha256_digest(blob), len(blob))
    hostile_ref = BlobRef(descriptor, ref.data_size, sha256_digest(raw_table), len(stored))
    return {**image, "ref": hostile_ref, "blob": blob}


@pytest.mark.parametrize("lie", ["bomb", "short", "other bytes"])
def test_a_frame_whose_author_lies_is_never_data(image, tmp_path, lie):
    good = image["data"][:CHUNK]
    fake = {"bomb": zstandard.ZstdCompressor(level=19).compress(bytes(256 << 20)),
            "short": zstandard.ZstdCompressor().compress(good[:CHUNK - 4096]),
            "other bytes": zstandard.ZstdCompressor().compress(good[::-1])}[lie]
    bad = hostile(image, {0: fake})
    cache, blob, _ = open_blob(bad, tmp_path, source=BytesSource(bad["blob"]))
    assert blob.read_at(CHUNK, 10) == image["data"][CHUNK:CHUNK + 10]  # the honest frames read
    with pytest.raises(IntegrityError, match="failed verification"):
        blob.read_at(0, 10)
    assert not blob.is_present(0, 1) and blob.cached_bytes == CHUNK
    with open(blob.data_path, "rb") as f:
        assert f.read(CHUNK) == bytes(CHUNK)  # nothing of the lie was written
    cache.release(blob)

