"""Build an image from layers: one blob per layer, one merged bootstrap.

A layer is a *layer tree* (tree.py) plus the content of its regular files.
Each layer's blob is written from its own tree, in sorted order, before
any merging, so the blob depends on that layer alone; then the layers are
merged and the bootstrap written with one device slot per blob.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence

from ..errors import InvalidArgument
from .blobwriter import BlobInfo, BlobWriter, Content
from .bootstrap import write_bootstrap
from .codec import Compression
from .ondisk import BLOCK_SIZE_BITS, DeviceSlot
from .tree import Node, iter_tree, merge_layer

DEFAULT_CHUNK_SIZE = 1 << 20
BLOCK_SIZE = 1 << BLOCK_SIZE_BITS  # erofsd images; 512 is for images indexing tars
MAX_CHUNK_SIZE = 1 << 30

Progress = Callable[[int], None]


@dataclasses.dataclass
class Layer:
    tree: Node
    contents: Mapping[Node, Content]
    name: str = ""  # what to call it in messages

    def files(self) -> list[Node]:
        """Distinct regular files with data, in the order their bytes go into the blob."""
        seen: set[Node] = set()
        order = []
        for _, node in iter_tree(self.tree):
            if node.is_reg and node.size and node not in seen:
                seen.add(node)
                order.append(node)
        return order


@dataclasses.dataclass(frozen=True)
class BuildResult:
    bootstrap: bytes
    blobs: tuple[BlobInfo, ...]
    chunk_size: int
    inodes: int
    file_bytes: int
    deduplicated_bytes: int


def check_block_size(block_size: int) -> int:
    if block_size not in (512, 1024, 2048, 4096):
        raise InvalidArgument(f"block size {block_size} must be 512, 1024, 2048 or 4096")
    return block_size


def check_chunk_size(chunk_size: int, block_size: int = BLOCK_SIZE) -> int:
    if chunk_size < block_size or chunk_size > MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise InvalidArgument(f"chunk size {chunk_size} must be a power of two from "
                              f"{block_size} to {MAX_CHUNK_SIZE}")
    return chunk_size


def write_layer_blob(layer: Layer, device: int, workdir: str, chunk_size: int,
                     progress: Progress | None = None, block_size: int = BLOCK_SIZE,
                     compression: Compression | None = None) -> tuple[BlobInfo, int]:
    """Write one layer's blob into ``workdir``; returns it and the bytes deduplicated."""
    fd, path = tempfile.mkstemp(prefix=".blob-", suffix=".tmp", dir=workdir)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            writer = BlobWriter(out, chunk_size, block_size, compression)
            for node in layer.files():
                node.device = device
                writer.add(node, layer.contents[node])
                if progress:
                    progress(node.size)
            info = writer.finish(path)
    except BaseException:
        os.unlink(path)
        raise
    return info, writer.deduplicated_bytes


def build(layers: Sequence[Layer], workdir: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
          progress: Progress | None = None, block_size: int = BLOCK_SIZE,
          compression: Compression | None = Compression()) -> BuildResult:
    """Blobs go to files in ``workdir`` (the caller moves or removes them)."""
    check_chunk_size(chunk_size, check_block_size(block_size))
    if not layers:
        raise InvalidArgument("an image needs at least one layer")
    blobs: list[BlobInfo] = []
    deduplicated = 0
    try:
        for device, layer in enumerate(layers, start=1):
            info, saved = write_layer_blob(layer, device, workdir, chunk_size, progress,
                                           block_size, compression)
            blobs.append(info)
            deduplicated += saved
        result = assemble([layer.tree for layer in layers], blobs, chunk_size, block_size)
    except BaseException:
        for info in blobs:
            os.unlink(info.path)
        raise
    return dataclasses.replace(result, deduplicated_bytes=deduplicated)


def assemble(trees: Sequence[Node], blobs: Sequence[BlobInfo], chunk_size: int,
             block_size: int = BLOCK_SIZE) -> BuildResult:
    """Merge layer trees whose blobs are written (``node.device`` set) into a bootstrap."""
    merged: Node | None = None
    for tree in trees:
        merged = merge_layer(merged, tree)
    assert merged is not None
    slots = [DeviceSlot(info.hex.encode(), info.data_size // block_size) for info in blobs]
    uuid = hashlib.sha256("".join(b.digest for b in blobs).encode()).digest()[:16]
    bootstrap = write_bootstrap(merged, slots, chunk_size, uuid=uuid,
                                blkszbits=block_size.bit_length() - 1)
    nodes = {node for _, node in iter_tree(merged)}
    return BuildResult(
        bootstrap=bootstrap, blobs=tuple(blobs), chunk_size=chunk_size, inodes=len(nodes),
        file_bytes=sum(n.size for n in nodes if n.is_reg), deduplicated_bytes=0)


def total_file_bytes(layers: Sequence[Layer]) -> int:
    """What the blob writers will read, for a progress bar."""
    return sum(node.size for layer in layers for node in layer.files())
