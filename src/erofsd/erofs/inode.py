"""Inodes as the reader sees them: a decoded record, checked, plus where it lives."""

from __future__ import annotations

import dataclasses
import stat

from ..errors import CorruptImage, Unsupported
from .ondisk import (
    CHUNK_FORMAT_ALL,
    COMPRESSED_LAYOUTS,
    LAYOUT_CHUNK_BASED,
    LAYOUT_FLAT_INLINE,
    LAYOUT_NAMES,
    InodeRecord,
    decode_rdev,
)
from .xattrs import area_size

_VALID_TYPES = frozenset({stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR,
                          stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK})
I_FORMAT_ALL = 0xF  # version bit + 3 layout bits


@dataclasses.dataclass(frozen=True)
class Stat:
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    mtime_nsec: int
    nlink: int
    rdev: int
    ino: int

    @property
    def mtime_ns(self) -> int:
        return self.mtime * 1_000_000_000 + self.mtime_nsec


@dataclasses.dataclass(frozen=True)
class Inode:
    nid: int
    location: int  # byte offset of the on-disk inode in the bootstrap
    record: InodeRecord
    mtime: int
    mtime_nsec: int

    @property
    def mode(self) -> int:
        return self.record.mode

    @property
    def size(self) -> int:
        return self.record.size

    @property
    def layout(self) -> int:
        return self.record.layout

    @property
    def layout_name(self) -> str:
        return LAYOUT_NAMES.get(self.layout, f"layout {self.layout}")

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def xattr_size(self) -> int:
        return area_size(self.record.xattr_icount)

    @property
    def xattr_offset(self) -> int:
        return self.location + self.record.isize

    @property
    def tail_offset(self) -> int:
        """Where inline data or the chunk array starts (before alignment)."""
        return self.xattr_offset + self.xattr_size

    @property
    def chunk_format(self) -> int:
        return self.record.i_u & 0xFFFF

    def stat(self) -> Stat:
        r = self.record
        is_dev = stat.S_ISCHR(r.mode) or stat.S_ISBLK(r.mode)
        return Stat(mode=r.mode, uid=r.uid, gid=r.gid, size=r.size, mtime=self.mtime,
                    mtime_nsec=self.mtime_nsec, nlink=r.nlink,
                    rdev=decode_rdev(r.i_u) if is_dev else 0, ino=self.nid)

    def require_uncompressed(self) -> None:
        if self.layout in COMPRESSED_LAYOUTS:
            raise Unsupported(f"nid {self.nid}: compressed data layout {self.layout_name} "
                              "is not supported")


def check_inode(inode: Inode, block_size: int) -> None:
    """The checks the kernel makes in erofs_read_inode, as typed errors."""
    raw_format = inode.record.i_format
    where = f"inode nid {inode.nid}"
    if raw_format & ~I_FORMAT_ALL:
        raise Unsupported(f"{where}: unsupported i_format {raw_format:#x}")
    if inode.layout not in LAYOUT_NAMES:
        raise Unsupported(f"{where}: unknown data layout {inode.layout}")
    if stat.S_IFMT(inode.mode) not in _VALID_TYPES:
        raise CorruptImage(f"{where}: bad file type in mode {inode.mode:#o}")
    if inode.layout == LAYOUT_CHUNK_BASED and inode.chunk_format & ~CHUNK_FORMAT_ALL:
        raise Unsupported(f"{where}: unsupported chunk format {inode.chunk_format:#x}")
    if inode.layout == LAYOUT_FLAT_INLINE:
        tail = inode.size % block_size
        if tail and inode.tail_offset % block_size + tail > block_size:
            raise CorruptImage(f"{where}: inline data crosses a block boundary")
    if inode.size < 0 or inode.size > 1 << 62:
        raise CorruptImage(f"{where}: impossible size {inode.size}")
