"""crc32c, as the superblock checksum uses it."""

from __future__ import annotations

from erofsd.erofs.crc32c import crc32c


def test_crc32c_known_vector():
    # the standard CRC-32C check value is 0xE3069283; erofs keeps the register un-inverted
    assert crc32c(b"123456789") ^ 0xFFFFFFFF == 0xE3069283

