"""On-disk structs: sizes pinned, records symmetric, codecs round-trip."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erofsd.erofs import dirents, xattrs
from erofsd.erofs.chunktable import ChunkEntry, ChunkTable
from erofsd.erofs.crc32c import crc32c
from erofsd.erofs.ondisk import (
    BLOCK_MAP_ENTRY,
    CHUNK_INDEX,
    DEVICE_SLOT,
    DIRENT,
    INODE_COMPACT,
    INODE_EXTENDED,
    SUPER_BLOCK,
    XATTR_ENTRY,
    XATTR_IBODY_HEADER,
    ChunkIndex,
    DeviceSlot,
    InodeRecord,
    Superblock,
    decode_rdev,
    encode_rdev,
)
from erofsd.errors import CorruptImage


def test_struct_sizes_match_erofs_fs_h():
    assert SUPER_BLOCK.size == 128
    assert INODE_COMPACT.size == 32
    assert INODE_EXTENDED.size == 64
    assert DEVICE_SLOT.size == 128
    assert DIRENT.size == 12
    assert CHUNK_INDEX.size == 8
    assert BLOCK_MAP_ENTRY.size == 4
    assert XATTR_IBODY_HEADER.size == 12
    assert XATTR_ENTRY.size == 4


def test_crc32c_known_vector():
    # the standard CRC-32C check value is 0xE3069283; erofs keeps the register un-inverted
    assert crc32c(b"123456789") ^ 0xFFFFFFFF == 0xE3069283


u16, u32, u64 = (st.integers(0, 2**n - 1) for n in (16, 32, 64))


@given(st.builds(Superblock, checksum=u32, feature_compat=u32, blkszbits=st.integers(0, 255),
                 root_nid=u16, inos=u64, build_time=st.integers(-2**63, 2**63 - 1),
                 build_time_nsec=u32, blocks=u32, meta_blkaddr=u32, xattr_blkaddr=u32,
                 uuid=st.binary(min_size=16, max_size=16), feature_incompat=u32, u1=u16,
                 extra_devices=u16, devt_slotoff=u16, packed_nid=u64))
def test_superblock_round_trip(sb):
    assert len(sb.pack()) == 128
    assert Superblock.unpack(sb.pack()) == sb


@given(extended=st.booleans(), layout=st.integers(0, 7), xc=u16, mode=u16, nlink=u16,
       size=u32, i_u=u32, ino=u32, uid=u16, gid=u16,
       mtime=st.integers(-2**63, 2**63 - 1), nsec=u32)
def test_inode_round_trip(extended, layout, xc, mode, nlink, size, i_u, ino, uid, gid, mtime,
                          nsec):
    record = InodeRecord(extended, layout, xc, mode, nlink, size, i_u, ino, uid, gid,
                         mtime if extended else 0, nsec if extended else 0)
    packed = record.pack()
    assert len(packed) == (64 if extended else 32)
    assert InodeRecord.unpack(packed) == record


@given(tag=st.binary(min_size=64, max_size=64), blocks=u32, mapped=u32, dev=u16, blk=u32)
def test_device_slot_and_chunk_index_round_trip(tag, blocks, mapped, dev, blk):
    slot = DeviceSlot(tag, blocks, mapped)
    assert DeviceSlot.unpack(slot.pack()) == slot
    index = ChunkIndex(dev, blk)
    assert ChunkIndex.unpack(index.pack()) == index


@given(major=st.integers(0, 4095), minor=st.integers(0, 2**20 - 1))
def test_rdev_encoding_matches_linux_new_encode_dev(major, minor):
    rdev = os.makedev(major, minor)
    assert decode_rdev(encode_rdev(rdev)) == rdev
    if minor < 256 and major < 256:
        assert encode_rdev(rdev) == (major << 8) | minor


names = st.binary(min_size=1, max_size=255).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b".."))


@given(st.lists(names, min_size=1, max_size=400, unique=True))
def test_directory_blocks_round_trip(name_list):
    entries = sorted((dirents.Dirent(n, i + 100, 1) for i, n in enumerate(name_list)),
                     key=lambda e: e.name)
    blocks = dirents.pack_blocks(entries, 4096)
    assert all(len(b) <= 4096 for b in blocks)
    assert sum(len(b) for b in blocks[:-1]) + len(blocks[-1]) <= len(blocks) * 4096
    assert dirents.directory_size([len(e.name) for e in entries], 4096) == \
        4096 * (len(blocks) - 1) + len(blocks[-1])
    parsed = [d for b in blocks for d in dirents.parse_block(b)]
    assert parsed == entries


@pytest.mark.parametrize("block", [b"", b"\0" * 12, DIRENT.pack(1, 5, 1) + b"abc",
                                   DIRENT.pack(1, 24, 1) + DIRENT.pack(2, 12, 1) + b"ab"])
def test_bad_directory_blocks_are_corrupt(block):
    with pytest.raises(CorruptImage):
        dirents.parse_block(block)


@given(st.lists(st.tuples(st.sampled_from([b"user.", b"trusted.", b"security."]),
                          st.binary(min_size=1, max_size=60), st.binary(max_size=300)),
                max_size=20))
def test_xattr_area_round_trip(items):
    packed, wanted = [], []
    for prefix, suffix, value in items:
        index, found_suffix = xattrs.split_name(prefix + suffix)
        assert found_suffix == suffix
        packed.append(xattrs.pack_entry(index, suffix, value))
        wanted.append((prefix + suffix, value))
    area, icount = xattrs.pack_inline([], packed)
    assert len(area) == xattrs.area_size(icount)
    assert xattrs.parse_inline(area, lambda i: None, "test") == wanted


def test_xattr_names_that_cannot_be_stored():
    assert xattrs.split_name(b"system.posix_acl_access") == (2, b"")
    assert xattrs.split_name(b"system.other") is None
    assert xattrs.split_name(b"user.") is None
    assert xattrs.split_name(b"user." + b"x" * 256) is None


@given(st.lists(st.integers(1, 300), max_size=50))
def test_chunk_table_round_trip_and_covering(block_counts):
    entries, offset = [], 0
    for n in block_counts:
        entries.append(ChunkEntry(offset, n * 4096, os.urandom(32)))
        offset += n * 4096
    table = ChunkTable(tuple(entries))
    assert ChunkTable.unpack(table.pack(), offset) == table
    for i, e in enumerate(entries):
        assert list(table.covering(e.offset, e.offset + 1)) == [i]
        assert list(table.covering(e.offset, e.end)) == [i]
    if entries:
        assert list(table.covering(0, offset)) == list(range(len(entries)))


def test_chunk_table_rejects_gaps_and_bad_sizes():
    good = ChunkTable((ChunkEntry(0, 4096, bytes(32)), ChunkEntry(4096, 4096, bytes(32))))
    gap = ChunkTable((ChunkEntry(0, 4096, bytes(32)), ChunkEntry(8192, 4096, bytes(32))))
    with pytest.raises(CorruptImage, match="contiguous"):
        ChunkTable.unpack(gap.pack())
    with pytest.raises(CorruptImage, match="covers"):
        ChunkTable.unpack(good.pack(), 4096)
    with pytest.raises(CorruptImage):
        ChunkTable.unpack(good.pack()[:-1])
    with pytest.raises(CorruptImage, match="magic"):
        ChunkTable.unpack(b"X" + good.pack()[1:])


@pytest.mark.parametrize("name", [b"", b"x" * 256, b"a/b", b"nul\0", b".", b".."])
def test_names_erofs_cannot_store_are_refused(name):
    from erofsd.erofs.tree import check_name
    from erofsd.errors import NameNotStorable
    with pytest.raises(NameNotStorable, match="cannot be stored"):
        check_name(name, "layer/path")
