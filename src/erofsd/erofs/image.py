"""The EROFS image reader: parse, map, read.

``Image`` opens a bootstrap plus its blob devices, all through ``read_at``.
It keeps no seek pointer and no mutable state but bounded caches, so any
number of threads can use one image. Every value read from disk is checked
before it is used; a bad one raises ``CorruptImage`` (or ``Unsupported``),
never loops, and never allocates more than the image itself is big.
"""

from __future__ import annotations

import functools
import stat
from collections.abc import Iterator, Sequence

from ..errors import (
    ChecksumMismatch,
    CorruptImage,
    DeviceMissing,
    InvalidArgument,
    IsADirectory,
    NoSuchXattr,
    NotADirectory,
    NotASymlink,
    NotFound,
    Unsupported,
)
from . import dirents, xattrs
from .inode import Inode, Stat, check_inode
from .mapping import ChunkGeometry, Extent, chunk_geometry, map_chunked, map_flat
from .ondisk import (
    DEVICE_SLOT,
    FEATURE_COMPAT_SB_CHKSUM,
    FEATURE_INCOMPAT_DEVICE_TABLE,
    FEATURE_INCOMPAT_KNOWN,
    INODE_COMPACT,
    INODE_EXTENDED,
    LAYOUT_CHUNK_BASED,
    NID_SHIFT,
    SUPER_BLOCK,
    SUPER_MAGIC,
    SUPER_OFFSET,
    XATTR_ENTRY,
    DeviceSlot,
    InodeRecord,
    Superblock,
    superblock_checksum,
    superblock_checksum_length,
)
from .readat import BlockCachedReadAt, ReadAt

PATH_MAX = 4096


class Image:
    def __init__(self, bootstrap: ReadAt, devices: Sequence[ReadAt] | None = None) -> None:
        self.superblock = sb = _read_superblock(bootstrap)
        self.block_size = sb.block_size
        self._meta = BlockCachedReadAt(bootstrap, sb.block_size)
        self.slots: tuple[DeviceSlot, ...] = self._read_device_table()
        if devices is not None and len(devices) != len(self.slots):
            raise InvalidArgument(f"image has {len(self.slots)} blob device(s), "
                                  f"{len(devices)} given")
        self._devices = None if devices is None else tuple(devices)
        # per-image caches (a class-level lru_cache would pin every image ever opened)
        self.inode = functools.lru_cache(maxsize=65536)(self._load_inode)
        self._chunks = functools.lru_cache(maxsize=4096)(self._load_chunks)
        self.root = self.inode(sb.root_nid)
        if not self.root.is_dir:
            raise CorruptImage(f"root nid {sb.root_nid} is not a directory")

    # -- metadata ---------------------------------------------------------

    def _meta_read(self, offset: int, length: int, what: str) -> bytes:
        data = self._meta.read_at(offset, length)
        if len(data) != length:
            raise CorruptImage(f"{what} at byte {offset} is past the end of the bootstrap "
                               f"({self._meta.size} bytes)")
        return data

    def _read_device_table(self) -> tuple[DeviceSlot, ...]:
        sb = self.superblock
        if not sb.feature_incompat & FEATURE_INCOMPAT_DEVICE_TABLE or not sb.extra_devices:
            return ()
        offset = sb.devt_slotoff * DEVICE_SLOT.size
        raw = self._meta_read(offset, sb.extra_devices * DEVICE_SLOT.size, "device table")
        return tuple(DeviceSlot.unpack(raw[i * DEVICE_SLOT.size:(i + 1) * DEVICE_SLOT.size])
                     for i in range(sb.extra_devices))

    def _load_inode(self, nid: int) -> Inode:
        sb = self.superblock
        location = sb.meta_blkaddr * self.block_size + (nid << NID_SHIFT)
        head = self._meta_read(location, INODE_COMPACT.size, f"inode nid {nid}")
        if InodeRecord.is_extended(head):
            head = self._meta_read(location, INODE_EXTENDED.size, f"inode nid {nid}")
        record = InodeRecord.unpack(head)
        if record.extended:
            mtime, nsec = record.mtime, record.mtime_nsec
        else:
            mtime, nsec = sb.build_time, sb.build_time_nsec
        inode = Inode(nid, location, record, mtime, nsec)
        check_inode(inode, self.block_size)
        if inode.tail_offset > self._meta.size:
            raise CorruptImage(f"inode nid {nid}: xattrs run past the end of the bootstrap")
        return inode

    def stat(self, inode: Inode) -> Stat:
        return inode.stat()

    # -- directories ------------------------------------------------------

    def _dir_block(self, inode: Inode, index: int) -> list[dirents.Dirent]:
        start = index * self.block_size
        length = min(self.block_size, inode.size - start)
        return dirents.parse_block(self._read_data(inode, start, length), inode.nid)

    def _dir_blocks(self, inode: Inode) -> int:
        if not inode.is_dir:
            raise NotADirectory(f"nid {inode.nid} is not a directory")
        return -(-inode.size // self.block_size)

    def iterdir(self, inode: Inode) -> Iterator[dirents.Dirent]:
        """Every dirent in on-disk order, "." and ".." included."""
        for index in range(self._dir_blocks(inode)):
            yield from self._dir_block(inode, index)

    def listdir(self, inode: Inode) -> list[dirents.Dirent]:
        return [d for d in self.iterdir(inode) if d.name not in (b".", b"..")]

    def find(self, directory: Inode, name: bytes) -> dirents.Dirent:
        """Binary search over sorted blocks, then within the block (as the kernel does)."""
        lo, hi = 0, self._dir_blocks(directory) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            entries = self._dir_block(directory, mid)
            if name < entries[0].name:
                hi = mid - 1
            elif name > entries[-1].name:
                lo = mid + 1
            else:
                for entry in entries:
                    if entry.name == name:
                        return entry
                break
        raise NotFound(f"no such file: {name.decode(errors='replace')}")

    def lookup(self, path: str | bytes) -> Inode:
        """Resolve an absolute or root-relative path; symlinks are not followed."""
        raw = path.encode() if isinstance(path, str) else path
        stack = [self.root]
        for part in raw.split(b"/"):
            if part in (b"", b"."):
                continue
            if part == b"..":
                if len(stack) > 1:
                    stack.pop()
                continue
            current = stack[-1]
            if not current.is_dir:
                raise NotADirectory(f"not a directory: {_show(raw)}")
            try:
                stack.append(self.inode(self.find(current, part).nid))
            except NotFound:
                raise NotFound(f"no such file or directory: {_show(raw)}") from None
        return stack[-1]

    def walk(self) -> Iterator[tuple[bytes, Inode]]:
        """Every (path, inode), parents before children, each directory once.

        The order is the builder's blob order (a directory's entries by
        name, then its subdirectories depth first), so walking an image
        reads its blobs front to back. A directory reached twice (a cycle,
        or a hard-linked directory) is corruption; this keeps a hostile
        image from looping.
        """
        yield b"/", self.root
        seen = {self.root.nid}
        pending = [(b"", self.root)]
        while pending:
            prefix, directory = pending.pop()
            subdirs = []
            for entry in self.listdir(directory):
                child = self.inode(entry.nid)
                path = prefix + b"/" + entry.name
                yield path, child
                if child.is_dir:
                    if child.nid in seen:
                        raise CorruptImage(f"directory cycle at {_show(path)} (nid {child.nid})")
                    seen.add(child.nid)
                    subdirs.append((path, child))
            pending.extend(reversed(subdirs))

    # -- data -------------------------------------------------------------

    def _load_chunks(self, inode: Inode) -> tuple[ChunkGeometry, bytes]:
        geometry = chunk_geometry(inode, self.superblock.blkszbits)
        if geometry.chunk_size > 1 << 43:
            raise CorruptImage(f"nid {inode.nid}: chunk size {geometry.chunk_size} too large")
        if geometry.table_offset + geometry.table_size > self._meta.size:
            raise CorruptImage(f"nid {inode.nid}: chunk table of {geometry.count} entries "
                               "runs past the end of the bootstrap")
        table = self._meta_read(geometry.table_offset, geometry.table_size,
                                f"nid {inode.nid} chunk table")
        return geometry, table

    def map(self, inode: Inode, offset: int) -> Extent:
        """Where the byte at ``offset`` of a file lives, and how many follow it there."""
        if not 0 <= offset < inode.size:
            raise InvalidArgument(f"offset {offset} outside nid {inode.nid} of size {inode.size}")
        inode.require_uncompressed()
        blkszbits = self.superblock.blkszbits
        if inode.layout == LAYOUT_CHUNK_BASED:
            geometry, table = self._chunks(inode)
            return map_chunked(inode, geometry, table, offset, blkszbits, self.slots)
        return map_flat(inode, offset, blkszbits)

    def device_limit(self, device: int) -> int | None:
        """Bytes addressable on a device: the bootstrap's size, or a slot's blocks.

        mkfs.erofs 1.5 leaves a slot's blocks at 0 (unknown); then only the
        device's own end bounds a read.
        """
        if device == 0:
            return self._meta.size
        return self.slots[device - 1].blocks * self.block_size or None

    def _read_extent(self, extent: Extent, length: int, inode: Inode) -> bytes:
        if extent.device is None:
            return bytes(length)
        limit = self.device_limit(extent.device)
        if limit is not None and extent.physical + length > limit:
            raise CorruptImage(f"nid {inode.nid}: data at {extent.physical}+{length} is past "
                               f"the end of device {extent.device}")
        if extent.device == 0:
            return self._meta_read(extent.physical, length, f"nid {inode.nid} data")
        if self._devices is None:
            raise DeviceMissing(f"nid {inode.nid}: data lives on blob device {extent.device}, "
                                "which was not attached")
        data = self._devices[extent.device - 1].read_at(extent.physical, length)
        if len(data) != length:
            raise CorruptImage(f"nid {inode.nid}: blob device {extent.device} is truncated "
                               f"(wanted {length} bytes at {extent.physical})")
        return data

    def _read_data(self, inode: Inode, offset: int, length: int) -> bytes:
        end = min(inode.size, offset + length)
        parts = []
        while offset < end:
            extent = self.map(inode, offset)
            n = min(extent.length, end - offset)
            parts.append(self._read_extent(extent, n, inode))
            offset += n
        return b"".join(parts)

    def cached(self, inode: Inode, offset: int, length: int) -> bool:
        """True when reading this range of a file waits on no fetch (all bytes are local)."""
        end = min(inode.size, offset + length)
        while offset < end:
            extent = self.map(inode, offset)
            if extent.device and self._devices is not None:
                present = getattr(self._devices[extent.device - 1], "is_present", None)
                if present is not None and not present(extent.physical,
                                                       min(extent.length, end - offset)):
                    return False
            offset += extent.length
        return True

    def read(self, inode: Inode, offset: int, length: int) -> bytes:
        """Bytes of a regular file; short only at its end."""
        if inode.is_dir:
            raise IsADirectory(f"nid {inode.nid} is a directory")
        if not inode.is_reg:
            raise InvalidArgument(f"nid {inode.nid} is not a regular file")
        if offset < 0 or length < 0:
            raise InvalidArgument("negative offset or length")
        return self._read_data(inode, offset, length)

    def readlink(self, inode: Inode) -> bytes:
        if not inode.is_symlink:
            raise NotASymlink(f"nid {inode.nid} is not a symlink")
        if not 0 < inode.size < PATH_MAX:
            raise CorruptImage(f"nid {inode.nid}: symlink of {inode.size} bytes")
        return self._read_data(inode, 0, inode.size)

    # -- xattrs -----------------------------------------------------------

    def _shared_xattr(self, shared_id: int) -> xattrs.Xattr | None:
        offset = self.superblock.xattr_blkaddr * self.block_size + 4 * shared_id
        head = self._meta_read(offset, XATTR_ENTRY.size, f"shared xattr {shared_id}")
        name_len, _index, value_size = XATTR_ENTRY.unpack(head)
        body = self._meta_read(offset, XATTR_ENTRY.size + name_len + value_size,
                               f"shared xattr {shared_id}")
        found, _ = xattrs.parse_entry(body, 0, f"shared xattr {shared_id}")
        return found

    def xattrs(self, inode: Inode) -> list[xattrs.Xattr]:
        area = self._meta_read(inode.xattr_offset, inode.xattr_size, f"nid {inode.nid} xattrs")
        return xattrs.parse_inline(area, self._shared_xattr, f"nid {inode.nid}")

    def listxattr(self, inode: Inode) -> list[bytes]:
        return [name for name, _ in self.xattrs(inode)]

    def getxattr(self, inode: Inode, name: bytes) -> bytes:
        for found, value in self.xattrs(inode):
            if found == name:
                return value
        raise NoSuchXattr(f"nid {inode.nid} has no xattr {name.decode(errors='replace')}")


def _read_superblock(bootstrap: ReadAt) -> Superblock:
    head = bootstrap.read_at(SUPER_OFFSET, SUPER_BLOCK.size)
    if len(head) != SUPER_BLOCK.size:
        raise CorruptImage(f"image of {bootstrap.size} bytes is too small for an EROFS "
                           "superblock")
    sb = Superblock.unpack(head)
    if sb.magic != SUPER_MAGIC:
        raise CorruptImage(f"not an EROFS image (magic {sb.magic:#010x})")
    if not 9 <= sb.blkszbits <= 16:
        raise Unsupported(f"block size 2^{sb.blkszbits} is not supported")
    if sb.feature_incompat & ~FEATURE_INCOMPAT_KNOWN:
        raise Unsupported(f"unknown incompatible features "
                          f"{sb.feature_incompat & ~FEATURE_INCOMPAT_KNOWN:#x}")
    if sb.feature_compat & FEATURE_COMPAT_SB_CHKSUM:
        length = superblock_checksum_length(sb.block_size)
        block = bootstrap.read_at(SUPER_OFFSET, length)
        if len(block) != length:
            raise CorruptImage("superblock block is truncated")
        if superblock_checksum(block) != sb.checksum:
            raise ChecksumMismatch(f"superblock checksum mismatch (stored {sb.checksum:#010x})")
    return sb


def _show(path: bytes) -> str:
    return path.decode(errors="replace")


def file_kind(mode: int) -> str:
    """A one-word name of a file type, for messages and listings."""
    return {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink",
            stat.S_IFCHR: "char device", stat.S_IFBLK: "block device", stat.S_IFIFO: "fifo",
            stat.S_IFSOCK: "socket"}.get(stat.S_IFMT(mode), "unknown")
