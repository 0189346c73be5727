"""Blobs written straight by the blob writer, from file contents made up for a test."""

from __future__ import annotations

import io
import random
import stat

from erofsd.erofs import codec
from erofsd.erofs.blobwriter import BlobWriter
from erofsd.erofs.chunktable import ChunkTable
from erofsd.erofs.tree import Node

CHUNK = 64 * 1024


class Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def iter_chunks(self, chunk_size: int):
        for at in range(0, len(self.data), chunk_size):
            yield self.data[at:at + chunk_size]


def files(seed: int) -> list[bytes]:
    """Small and large files, text and noise, a duplicate and an all-zero chunk."""
    rng = random.Random(seed)
    text = b"".join(b"%d some words that repeat\n" % rng.randrange(100) for _ in range(20000))
    out = [text[:rng.randrange(1, 9000)] for _ in range(40)]
    out += [rng.randbytes(rng.randrange(1, 30_000)) for _ in range(10)]
    out += [text[:300_000], rng.randbytes(200_000), bytes(CHUNK) + b"tail", out[3]]
    return out


def write(data: list[bytes], compression: codec.Compression | None):
    """(BlobInfo, the stored blob, its chunk table, each file's chunk addresses)."""
    out = io.BytesIO()
    writer = BlobWriter(out, CHUNK, compression=compression)
    addresses = []
    for content in data:
        node = Node(mode=stat.S_IFREG | 0o644, size=len(content))
        writer.add(node, Bytes(content))
        addresses.append(node.chunks)
    info = writer.finish("")
    blob = out.getvalue()
    assert len(blob) == info.size
    table = ChunkTable.unpack(blob[info.table_offset:], info.data_size, info.table_offset)
    return info, blob, table, addresses
