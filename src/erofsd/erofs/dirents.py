"""Directory blocks: parse one, and lay out a sorted directory into blocks.

A block holds ``erofs_dirent`` records, then the names they point to. The
first record's ``nameoff`` / 12 is the record count; a name ends where the
next one starts, and the last one at the first NUL or the block's end.
Names are sorted bytewise across the whole directory ("." and ".." too), so
lookup can binary-search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from ..errors import CorruptImage
from .ondisk import DIRENT, NAME_LEN


@dataclasses.dataclass(frozen=True)
class Dirent:
    name: bytes
    nid: int
    file_type: int


def parse_block(block: bytes, nid_of_dir: int = -1) -> list[Dirent]:
    """Decode one directory block (already cut to its valid length)."""
    where = f"directory nid {nid_of_dir}"
    if len(block) < DIRENT.size:
        raise CorruptImage(f"{where}: block of {len(block)} bytes holds no dirent")
    _, first_nameoff, _ = DIRENT.unpack_from(block, 0)
    if first_nameoff < DIRENT.size or first_nameoff % DIRENT.size or first_nameoff >= len(block):
        raise CorruptImage(f"{where}: bad first name offset {first_nameoff}")
    count = first_nameoff // DIRENT.size
    records = [DIRENT.unpack_from(block, i * DIRENT.size) for i in range(count)]
    entries = []
    for i, (nid, nameoff, file_type) in enumerate(records):
        if i + 1 < count:
            end = records[i + 1][1]
        else:
            nul = block.find(b"\0", nameoff)
            end = len(block) if nul < 0 else nul
        if not first_nameoff <= nameoff < end <= len(block):
            raise CorruptImage(f"{where}: name offsets {nameoff}..{end} out of the block")
        name = block[nameoff:end]
        if len(name) > NAME_LEN or b"/" in name or b"\0" in name:
            raise CorruptImage(f"{where}: invalid name {name[:64]!r}")
        entries.append(Dirent(name, nid, file_type))
    return entries


def pack_blocks(entries: Sequence[Dirent], block_size: int) -> list[bytes]:
    """Lay sorted entries into blocks; the last block is not padded."""
    blocks = []
    for group in _group_into_blocks([len(e.name) for e in entries], block_size):
        chosen = entries[group.start:group.stop]
        nameoff = DIRENT.size * len(chosen)
        heads, names = [], []
        for e in chosen:
            heads.append(DIRENT.pack(e.nid, nameoff, e.file_type))
            names.append(e.name)
            nameoff += len(e.name)
        blocks.append(b"".join(heads) + b"".join(names))
    return blocks


def directory_size(name_lengths: Iterable[int], block_size: int) -> int:
    """i_size of a directory: full blocks for all but the last, then its used bytes."""
    lengths = list(name_lengths)
    groups = _group_into_blocks(lengths, block_size)
    last = groups[-1]
    used = sum(DIRENT.size + n for n in lengths[last.start:last.stop])
    return (len(groups) - 1) * block_size + used


def _group_into_blocks(name_lengths: Sequence[int], block_size: int) -> list[range]:
    groups, start, used = [], 0, 0
    for i, n in enumerate(name_lengths):
        need = DIRENT.size + n
        if used + need > block_size:
            groups.append(range(start, i))
            start, used = i, 0
        used += need
    groups.append(range(start, len(name_lengths)))
    return groups
