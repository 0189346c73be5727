"""Extended attributes: the inline area of an inode and shared entries.

Inline area = ``erofs_xattr_ibody_header`` (with the ids of shared entries)
followed by entries, each ``erofs_xattr_entry`` + name suffix + value padded
to 4 bytes. A shared entry has the same shape and lives at
``xattr_blkaddr * block_size + 4 * id``. Names are stored as a prefix index
plus a suffix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import CorruptImage
from .ondisk import SHARED_XATTR_ID, XATTR_ENTRY, XATTR_IBODY_HEADER, XATTR_PREFIXES

Xattr = tuple[bytes, bytes]  # full name, value

MAX_VALUE_SIZE = 0xFFFF
_WHOLE_NAME_INDEXES = (2, 3)  # posix ACLs: the prefix is the whole name


def align4(n: int) -> int:
    return (n + 3) & ~3


def area_size(icount: int) -> int:
    """xattr_isize for an i_xattr_icount."""
    return 0 if icount == 0 else XATTR_IBODY_HEADER.size + 4 * (icount - 1)


def split_name(name: bytes) -> tuple[int, bytes] | None:
    """(prefix index, suffix) for a full attribute name, or None if not storable."""
    for index in _WHOLE_NAME_INDEXES:
        if name == XATTR_PREFIXES[index]:
            return index, b""
    for index, prefix in XATTR_PREFIXES.items():
        if index not in _WHOLE_NAME_INDEXES and name.startswith(prefix) and len(name) > len(prefix):
            suffix = name[len(prefix):]
            return (index, suffix) if len(suffix) <= 0xFF else None
    return None


def pack_entry(index: int, suffix: bytes, value: bytes) -> bytes:
    raw = XATTR_ENTRY.pack(len(suffix), index, len(value)) + suffix + value
    return raw + bytes(align4(len(raw)) - len(raw))


def pack_inline(shared_ids: Sequence[int], entries: Sequence[bytes]) -> tuple[bytes, int]:
    """Inline area from shared ids and packed entries; returns (bytes, i_xattr_icount)."""
    if not shared_ids and not entries:
        return b"", 0
    body = (XATTR_IBODY_HEADER.pack(0, len(shared_ids))
            + b"".join(SHARED_XATTR_ID.pack(i) for i in shared_ids) + b"".join(entries))
    return body, (len(body) - XATTR_IBODY_HEADER.size) // 4 + 1


def parse_entry(data: bytes, pos: int, where: str) -> tuple[Xattr | None, int]:
    """Decode one entry at ``pos``; returns (xattr or None if its index is unknown, next pos)."""
    if pos + XATTR_ENTRY.size > len(data):
        raise CorruptImage(f"{where}: xattr entry header past the end of its area")
    name_len, index, value_size = XATTR_ENTRY.unpack_from(data, pos)
    start = pos + XATTR_ENTRY.size
    end = start + name_len + value_size
    if end > len(data):
        raise CorruptImage(f"{where}: xattr entry past the end of its area")
    prefix = XATTR_PREFIXES.get(index)
    suffix, value = data[start:start + name_len], data[start + name_len:end]
    return (None if prefix is None else (prefix + suffix, value)), pos + align4(end - pos)


def parse_inline(area: bytes, read_shared: Callable[[int], Xattr | None],
                 where: str) -> list[Xattr]:
    """All xattrs of an inode: shared ones first (in id order given), then inline."""
    if not area:
        return []
    if len(area) < XATTR_IBODY_HEADER.size:
        raise CorruptImage(f"{where}: xattr area shorter than its header")
    _, shared_count = XATTR_IBODY_HEADER.unpack_from(area, 0)
    pos = XATTR_IBODY_HEADER.size
    if pos + 4 * shared_count > len(area):
        raise CorruptImage(f"{where}: {shared_count} shared xattr ids overflow the area")
    result = []
    for i in range(shared_count):
        (shared_id,) = SHARED_XATTR_ID.unpack_from(area, pos + 4 * i)
        found = read_shared(shared_id)
        if found is not None:
            result.append(found)
    pos += 4 * shared_count
    while pos < len(area):
        found, pos = parse_entry(area, pos, where)
        if found is not None:
            result.append(found)
    return result
