"""Map a file offset to (device, physical offset, length): pure functions.

Every data path (the userspace reader, FUSE, fanotify prefetch, `check`)
asks the same question, so it is answered once, here, with no I/O: the
caller hands in the inode and, for chunk-based files, its chunk entries.

Devices are numbered as the chunk index numbers them: 0 is the bootstrap
(primary device), k >= 1 is device-table slot k-1 (blob k). A hole maps to
``device=None`` and reads as zeros.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..errors import CorruptImage
from .inode import Inode
from .ondisk import (
    BLOCK_MAP_ENTRY,
    CHUNK_FORMAT_BLKBITS_MASK,
    CHUNK_FORMAT_INDEXES,
    CHUNK_INDEX,
    LAYOUT_FLAT_INLINE,
    LAYOUT_FLAT_PLAIN,
    NULL_ADDR,
    DeviceSlot,
)


@dataclasses.dataclass(frozen=True)
class Extent:
    device: int | None
    physical: int
    length: int

    @property
    def is_hole(self) -> bool:
        return self.device is None


@dataclasses.dataclass(frozen=True)
class ChunkGeometry:
    chunk_size: int
    count: int
    entry_size: int  # 8 for chunk indexes, 4 for a block map
    table_offset: int  # byte offset of entry 0 in the bootstrap

    @property
    def table_size(self) -> int:
        return self.count * self.entry_size


def chunk_geometry(inode: Inode, blkszbits: int) -> ChunkGeometry:
    fmt = inode.chunk_format
    chunkbits = blkszbits + (fmt & CHUNK_FORMAT_BLKBITS_MASK)
    chunk_size = 1 << chunkbits
    entry = CHUNK_INDEX.size if fmt & CHUNK_FORMAT_INDEXES else BLOCK_MAP_ENTRY.size
    table_offset = (inode.tail_offset + entry - 1) // entry * entry
    count = -(-inode.size // chunk_size)
    return ChunkGeometry(chunk_size, count, entry, table_offset)


def map_flat(inode: Inode, offset: int, blkszbits: int) -> Extent:
    """FLAT_PLAIN and FLAT_INLINE: contiguous blocks on the bootstrap, maybe an inline tail."""
    bs = 1 << blkszbits
    size = inode.size
    raw_blkaddr = inode.record.i_u
    if inode.layout == LAYOUT_FLAT_PLAIN:
        return Extent(0, raw_blkaddr * bs + offset, size - offset)
    assert inode.layout == LAYOUT_FLAT_INLINE
    body_end = size // bs * bs
    if offset < body_end:
        return Extent(0, raw_blkaddr * bs + offset, body_end - offset)
    return Extent(0, inode.tail_offset + offset - body_end, size - offset)


def decode_chunk_entry(geometry: ChunkGeometry, table: bytes, index: int) -> tuple[int, int]:
    """(device_id, blkaddr) of chunk ``index`` from the raw chunk array."""
    pos = index * geometry.entry_size
    if geometry.entry_size == CHUNK_INDEX.size:
        _advise, device_id, blkaddr = CHUNK_INDEX.unpack_from(table, pos)
        return device_id, blkaddr
    (blkaddr,) = BLOCK_MAP_ENTRY.unpack_from(table, pos)
    return 0, blkaddr


def map_chunked(inode: Inode, geometry: ChunkGeometry, table: bytes, offset: int,
                blkszbits: int, slots: Sequence[DeviceSlot]) -> Extent:
    index, within = divmod(offset, geometry.chunk_size)
    length = min(geometry.chunk_size - within, inode.size - offset)
    device_id, blkaddr = decode_chunk_entry(geometry, table, index)
    if blkaddr == NULL_ADDR:
        return Extent(None, 0, length)
    device, physical = resolve_device(device_id, (blkaddr << blkszbits) + within, blkszbits, slots)
    return Extent(device, physical, length)


def resolve_device(device_id: int, physical: int, blkszbits: int,
                   slots: Sequence[DeviceSlot]) -> tuple[int, int]:
    """Apply the kernel's device-id mask and mapped_blkaddr ranges (erofs_map_dev)."""
    mask = (1 << len(slots).bit_length()) - 1 if slots else 0
    device = device_id & mask
    if device > len(slots):
        raise CorruptImage(f"chunk names device {device_id}, image has {len(slots)}")
    if device == 0:
        for k, slot in enumerate(slots, start=1):
            start = slot.mapped_blkaddr << blkszbits
            if slot.mapped_blkaddr and start <= physical < start + (slot.blocks << blkszbits):
                return k, physical - start
    return device, physical
