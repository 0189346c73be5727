"""On-disk structs (ondisk.py): sizes pinned as in erofs_fs.h, records symmetric."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

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

u16, u32, u64 = (st.integers(0, 2**n - 1) for n in (16, 32, 64))


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
