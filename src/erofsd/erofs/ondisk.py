"""EROFS on-disk format: structs, constants and records, nothing else.

Field names follow erofs-utils' include/erofs_fs.h (1.5/1.6, Linux 6.1).
Every record is a frozen dataclass whose ``pack`` and ``unpack`` are exact
inverses; parsing never trusts a field, it only decodes it (checks live
with the code that uses the values).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct

from .crc32c import crc32c

SUPER_OFFSET = 1024
SUPER_MAGIC = 0xE0F5E1E2
BLOCK_SIZE_BITS = 12  # what the builder writes; the reader accepts 9..16
NID_SHIFT = 5  # nid * 32 = byte offset from meta_blkaddr
NULL_ADDR = 0xFFFFFFFF
NAME_LEN = 255

FEATURE_COMPAT_SB_CHKSUM = 0x1
FEATURE_COMPAT_MTIME = 0x2

FEATURE_INCOMPAT_ZERO_PADDING = 0x1
FEATURE_INCOMPAT_COMPR_CFGS = 0x2  # also BIG_PCLUSTER
FEATURE_INCOMPAT_CHUNKED_FILE = 0x4
FEATURE_INCOMPAT_DEVICE_TABLE = 0x8
FEATURE_INCOMPAT_ZTAILPACKING = 0x10
FEATURE_INCOMPAT_FRAGMENTS = 0x20
# Bits Linux 6.1 accepts; the compression-only ones matter only to
# compressed inodes, which the reader refuses one by one.
FEATURE_INCOMPAT_KNOWN = 0x3F

# i_format: bit 0 version, bits 1..3 data layout
LAYOUT_FLAT_PLAIN = 0
LAYOUT_COMPRESSION_LEGACY = 1
LAYOUT_FLAT_INLINE = 2
LAYOUT_COMPRESSION = 3
LAYOUT_CHUNK_BASED = 4
LAYOUT_NAMES = {
    LAYOUT_FLAT_PLAIN: "FLAT_PLAIN",
    LAYOUT_COMPRESSION_LEGACY: "FLAT_COMPRESSION_LEGACY",
    LAYOUT_FLAT_INLINE: "FLAT_INLINE",
    LAYOUT_COMPRESSION: "FLAT_COMPRESSION",
    LAYOUT_CHUNK_BASED: "CHUNK_BASED",
}
COMPRESSED_LAYOUTS = frozenset({LAYOUT_COMPRESSION_LEGACY, LAYOUT_COMPRESSION})

CHUNK_FORMAT_BLKBITS_MASK = 0x001F
CHUNK_FORMAT_INDEXES = 0x0020
CHUNK_FORMAT_ALL = CHUNK_FORMAT_BLKBITS_MASK | CHUNK_FORMAT_INDEXES

# dirent file types
FT_UNKNOWN, FT_REG_FILE, FT_DIR, FT_CHRDEV, FT_BLKDEV, FT_FIFO, FT_SOCK, FT_SYMLINK = range(8)
FILE_TYPE_OF_MODE = {
    stat.S_IFREG: FT_REG_FILE,
    stat.S_IFDIR: FT_DIR,
    stat.S_IFCHR: FT_CHRDEV,
    stat.S_IFBLK: FT_BLKDEV,
    stat.S_IFIFO: FT_FIFO,
    stat.S_IFSOCK: FT_SOCK,
    stat.S_IFLNK: FT_SYMLINK,
}

# xattr name indexes -> prefix. Index 2/3 name whole attributes, suffix "".
XATTR_PREFIXES = {
    1: b"user.",
    2: b"system.posix_acl_access",
    3: b"system.posix_acl_default",
    4: b"trusted.",
    5: b"lustre.",
    6: b"security.",
}

SUPER_BLOCK = struct.Struct("<IIIBBHQqIIII16s16sIHHH6sQ24s")  # build_time is signed
INODE_COMPACT = struct.Struct("<HHHHIIIIHHI")
INODE_EXTENDED = struct.Struct("<HHHHQIIIIqII16s")  # i_mtime is signed (time64_t)
DEVICE_SLOT = struct.Struct("<64sII56s")  # tag, blocks, mapped_blkaddr, reserved
DIRENT = struct.Struct("<QHBx")  # nid, nameoff, file_type, reserved
CHUNK_INDEX = struct.Struct("<HHI")  # advise, device_id, blkaddr
BLOCK_MAP_ENTRY = struct.Struct("<I")
XATTR_IBODY_HEADER = struct.Struct("<IB7x")  # h_reserved, h_shared_count
XATTR_ENTRY = struct.Struct("<BBH")  # e_name_len, e_name_index, e_value_size
SHARED_XATTR_ID = struct.Struct("<I")

assert (SUPER_BLOCK.size, INODE_COMPACT.size, INODE_EXTENDED.size) == (128, 32, 64)
assert (DEVICE_SLOT.size, DIRENT.size, CHUNK_INDEX.size) == (128, 12, 8)
assert (XATTR_IBODY_HEADER.size, XATTR_ENTRY.size, BLOCK_MAP_ENTRY.size) == (12, 4, 4)

CHECKSUM_FIELD = slice(4, 8)  # within the superblock


def superblock_checksum_length(block_size: int) -> int:
    """How many bytes from byte 1024 the superblock checksum covers (the kernel's rule).

    The rest of the superblock's block for blocks above 1 KiB; a whole block
    for 512- and 1024-byte blocks, whose superblock starts in a later block.
    """
    return block_size - SUPER_OFFSET if block_size > SUPER_OFFSET else block_size


def superblock_checksum(span: bytes) -> int:
    """crc32c(~0, ...) with no final xor over ``superblock_checksum_length`` bytes from
    byte 1024, the checksum field taken as zero."""
    zeroed = span[:4] + b"\0\0\0\0" + span[8:]
    return crc32c(zeroed, 0xFFFFFFFF)


@dataclasses.dataclass(frozen=True)
class Superblock:
    magic: int = SUPER_MAGIC
    checksum: int = 0
    feature_compat: int = 0
    blkszbits: int = BLOCK_SIZE_BITS
    sb_extslots: int = 0
    root_nid: int = 0
    inos: int = 0
    build_time: int = 0
    build_time_nsec: int = 0
    blocks: int = 0
    meta_blkaddr: int = 0
    xattr_blkaddr: int = 0
    uuid: bytes = bytes(16)
    volume_name: bytes = bytes(16)
    feature_incompat: int = 0
    u1: int = 0
    extra_devices: int = 0
    devt_slotoff: int = 0
    reserved: bytes = bytes(6)
    packed_nid: int = 0
    reserved2: bytes = bytes(24)

    def pack(self) -> bytes:
        return SUPER_BLOCK.pack(*dataclasses.astuple(self))

    @classmethod
    def unpack(cls, data: bytes) -> Superblock:
        return cls(*SUPER_BLOCK.unpack_from(data))

    @property
    def block_size(self) -> int:
        return 1 << self.blkszbits


@dataclasses.dataclass(frozen=True)
class InodeRecord:
    """A compact or extended on-disk inode; ``extended`` picks the form."""

    extended: bool
    layout: int
    xattr_icount: int
    mode: int
    nlink: int
    size: int
    i_u: int  # raw_blkaddr | rdev | chunk format (low 16 bits)
    ino: int
    uid: int
    gid: int
    mtime: int = 0  # extended only; compact inodes take the superblock's
    mtime_nsec: int = 0

    @property
    def isize(self) -> int:
        return INODE_EXTENDED.size if self.extended else INODE_COMPACT.size

    @property
    def i_format(self) -> int:
        return int(self.extended) | (self.layout << 1)

    def pack(self) -> bytes:
        if self.extended:
            return INODE_EXTENDED.pack(
                self.i_format, self.xattr_icount, self.mode, 0, self.size, self.i_u,
                self.ino, self.uid, self.gid, self.mtime, self.mtime_nsec, self.nlink,
                bytes(16))
        return INODE_COMPACT.pack(
            self.i_format, self.xattr_icount, self.mode, self.nlink, self.size, 0,
            self.i_u, self.ino, self.uid, self.gid, 0)

    @staticmethod
    def is_extended(first_two_bytes: bytes) -> bool:
        return bool(first_two_bytes[0] & 1)

    @classmethod
    def unpack(cls, data: bytes) -> InodeRecord:
        """Decode from 32 (compact) or 64 (extended) bytes."""
        if cls.is_extended(data):
            (fmt, xc, mode, _r, size, i_u, ino, uid, gid, mtime, nsec, nlink,
             _r2) = INODE_EXTENDED.unpack_from(data)
            return cls(True, (fmt >> 1) & 0x7, xc, mode, nlink, size, i_u, ino, uid,
                       gid, mtime, nsec)
        fmt, xc, mode, nlink, size, _r, i_u, ino, uid, gid, _r2 = INODE_COMPACT.unpack_from(data)
        return cls(False, (fmt >> 1) & 0x7, xc, mode, nlink, size, i_u, ino, uid, gid)


@dataclasses.dataclass(frozen=True)
class DeviceSlot:
    tag: bytes  # 64 bytes: the blob's sha256 as hex, NUL-padded if shorter
    blocks: int
    mapped_blkaddr: int = 0

    def pack(self) -> bytes:
        return DEVICE_SLOT.pack(self.tag, self.blocks, self.mapped_blkaddr, bytes(56))

    @classmethod
    def unpack(cls, data: bytes) -> DeviceSlot:
        tag, blocks, mapped, _ = DEVICE_SLOT.unpack_from(data)
        return cls(tag, blocks, mapped)

    @property
    def tag_text(self) -> str:
        return self.tag.rstrip(b"\0").decode("ascii", "replace")


@dataclasses.dataclass(frozen=True)
class ChunkIndex:
    device_id: int
    blkaddr: int
    advise: int = 0

    def pack(self) -> bytes:
        return CHUNK_INDEX.pack(self.advise, self.device_id, self.blkaddr)

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> ChunkIndex:
        advise, device_id, blkaddr = CHUNK_INDEX.unpack_from(data, offset)
        return cls(device_id, blkaddr, advise)


def encode_rdev(rdev: int) -> int:
    """Linux new_encode_dev: what erofs keeps in i_u for device inodes."""
    major, minor = os.major(rdev), os.minor(rdev)
    return ((minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)) & 0xFFFFFFFF


def decode_rdev(value: int) -> int:
    """Linux new_decode_dev."""
    major = (value & 0xFFF00) >> 8
    minor = (value & 0xFF) | ((value >> 12) & 0xFFF00)
    return os.makedev(major, minor)


def file_type_of(mode: int) -> int:
    return FILE_TYPE_OF_MODE.get(stat.S_IFMT(mode), FT_UNKNOWN)
