"""An EROFS index of tar layers: 512-byte blocks whose file data is the tar itself.

The bootstrap holds the merged tree of the layers (whiteouts applied, hard
links, xattrs and all, read by tarlayer.py); each regular file's chunks
point at its bytes where they lie in its layer's uncompressed tar, device
k being layer k's tar and tagged with its diff_id. A tar puts every
member's data at a 512-byte boundary, so with 512-byte blocks (Linux 6.4
and later mount those) the kernel reads files straight from the tar:
nothing is copied and no layer is stored twice.

A GNU sparse member stores its data regions packed together, so its bytes
are not where the file has them: such a layer cannot be indexed (convert
it instead).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import BinaryIO

from ..errors import BuildError
from .bootstrap import write_bootstrap
from .builder import check_chunk_size
from .ondisk import DeviceSlot
from .tarlayer import TarContent, TarLayerReader
from .tree import Node, merge_layer

TAR_BLOCK = 512
INDEX_CHUNK = 1 << 20  # a chunk index entry (8 bytes) per MiB of file data
_PIECE = 1 << 20


@dataclasses.dataclass(frozen=True)
class TarDevice:
    """One layer's uncompressed tar, as the index's device table names it."""

    diff_id: str  # "sha256:<hex>" of the tar
    size: int

    @property
    def blocks(self) -> int:
        return -(-self.size // TAR_BLOCK)


@dataclasses.dataclass(frozen=True)
class TarIndex:
    bootstrap: bytes
    devices: tuple[TarDevice, ...]


class _Locator:
    """The content sink of a tar index: each chunk is where the file's bytes lie."""

    def __init__(self, name: str, chunk_size: int) -> None:
        self.name, self.chunk_size = name, chunk_size

    def add(self, node: Node, content) -> None:
        if not isinstance(content, TarContent):
            raise BuildError(f"layer {self.name}: {node.origin}: a sparse file's bytes are not "
                             "where the file has them, so this layer cannot be indexed "
                             "(convert the image instead)")
        node.chunks = [(content.offset + start) // TAR_BLOCK
                       for start in range(0, node.size, self.chunk_size)]


class _Measured:
    """A stream read through, its bytes counted and, unless its diff_id is known (and
    checked by whoever knows it), hashed."""

    def __init__(self, stream: BinaryIO, diff_id: str | None) -> None:
        self._stream = stream
        self._diff_id = diff_id
        self._hash = hashlib.sha256() if diff_id is None else None
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)
        return data

    def finish(self) -> TarDevice:
        while self.read(_PIECE):  # what follows the end-of-archive blocks is the tar's too
            pass
        diff_id = self._diff_id or "sha256:" + self._hash.hexdigest()
        return TarDevice(diff_id, self.size)


class TarIndexBuilder:
    """Layers added one by one, lowest first; ``finish`` writes the bootstrap."""

    def __init__(self, *, chunk_size: int = INDEX_CHUNK, rootless: bool = False) -> None:
        self.chunk_size = check_chunk_size(chunk_size, TAR_BLOCK)
        self.rootless = rootless
        self._merged: Node | None = None
        self.devices: list[TarDevice] = []

    def add_layer(self, name: str, stream: BinaryIO, diff_id: str | None = None) -> TarDevice:
        """Read one uncompressed tar stream to its end; BuildError names what is wrong.
        A ``diff_id`` given is taken as the tar's (the caller checks it): no second hash."""
        measured = _Measured(stream, diff_id)
        reader = TarLayerReader(name, len(self.devices) + 1, _Locator(name, self.chunk_size),
                                self._merged, rootless=self.rootless)
        tree = reader.read(measured)
        try:
            device = measured.finish()
        except ValueError as e:  # what follows the tar's end does not decompress
            raise BuildError(f"layer {name}: {e}") from None
        self._merged = merge_layer(self._merged, tree)
        self.devices.append(device)
        return device

    def finish(self) -> TarIndex:
        if self._merged is None:
            raise BuildError("an index needs at least one layer")
        slots = [DeviceSlot(d.diff_id.split(":", 1)[1].encode(), d.blocks) for d in self.devices]
        uuid = hashlib.sha256("".join(d.diff_id for d in self.devices).encode()).digest()[:16]
        bootstrap = write_bootstrap(self._merged, slots, self.chunk_size, uuid=uuid,
                                    blkszbits=TAR_BLOCK.bit_length() - 1)
        return TarIndex(bootstrap, tuple(self.devices))


def index_tar_layers(layers: Sequence[tuple[str, BinaryIO]], *,
                     chunk_size: int = INDEX_CHUNK, rootless: bool = False) -> TarIndex:
    """The index of ``layers`` ((name, uncompressed tar stream), lowest first)."""
    builder = TarIndexBuilder(chunk_size=chunk_size, rootless=rootless)
    for name, stream in layers:
        builder.add_layer(name, stream)
    return builder.finish()
