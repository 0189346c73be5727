"""CRC-32C (Castagnoli), reflected, table driven.

Only the superblock checksum uses it (3 KiB per image), so a pure-Python
table is fast enough and keeps the format package free of dependencies.
"""

from __future__ import annotations

_POLY = 0x82F63B78


def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc32c(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """Update a raw CRC-32C register; callers choose the initial value and final xor."""
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc
