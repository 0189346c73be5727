"""Write a bootstrap: the EROFS metadata image the kernel mounts.

Layout (4 KiB blocks for erofsd images, 512 bytes for tar indexes;
meta_blkaddr 0, so a nid is byte offset / 32):

    bytes 0.. [boot area][superblock @1024][device table @1152] ...
    then      [shared xattrs, if any, from a block boundary]
    then      [inodes, 32-byte aligned: inode, xattrs, inline tail or chunk indexes]
    then      [directory and symlink blocks that are not inline]

Regular files are CHUNK_BASED with 8-byte chunk indexes into the layer
blobs (device k = layer k); directories and symlinks keep their bytes here,
inline where the tail fits in the inode's block. Compact inodes are used
wherever the values fit, with the most common mtime as the build time.
"""

from __future__ import annotations

import collections
import dataclasses
import stat
from collections.abc import Sequence

from ..errors import BuildError
from . import dirents, xattrs
from .ondisk import (
    CHUNK_FORMAT_INDEXES,
    CHUNK_INDEX,
    DEVICE_SLOT,
    FEATURE_COMPAT_MTIME,
    FEATURE_COMPAT_SB_CHKSUM,
    FEATURE_INCOMPAT_CHUNKED_FILE,
    FEATURE_INCOMPAT_DEVICE_TABLE,
    FT_DIR,
    INODE_COMPACT,
    INODE_EXTENDED,
    LAYOUT_CHUNK_BASED,
    LAYOUT_FLAT_INLINE,
    LAYOUT_FLAT_PLAIN,
    NID_SHIFT,
    NULL_ADDR,
    SUPER_BLOCK,
    SUPER_OFFSET,
    DeviceSlot,
    InodeRecord,
    Superblock,
    encode_rdev,
    file_type_of,
    superblock_checksum,
    superblock_checksum_length,
)
from .tree import Node

MAX_SHARED_PER_INODE = 255  # h_shared_count is a u8
_U16, _U32 = 0xFFFF, 0xFFFFFFFF


def _align(n: int, unit: int) -> int:
    return -(-n // unit) * unit


@dataclasses.dataclass(eq=False)
class _Plan:
    """Where one inode goes and what it holds."""

    node: Node
    nlink: int = 0
    parent: Node | None = None
    size: int = 0
    data: bytes = b""  # directory or symlink bytes
    xattr_area: bytes = b""
    xattr_icount: int = 0
    extended: bool = False
    layout: int = LAYOUT_FLAT_PLAIN
    pos: int = 0
    raw_blkaddr: int = 0

    @property
    def nid(self) -> int:
        return self.pos >> NID_SHIFT

    @property
    def isize(self) -> int:
        return INODE_EXTENDED.size if self.extended else INODE_COMPACT.size

    @property
    def head_size(self) -> int:
        return self.isize + len(self.xattr_area)


def write_bootstrap(root: Node, devices: Sequence[DeviceSlot], chunk_size: int, *,
                    uuid: bytes = bytes(16), blkszbits: int = 12) -> bytes:
    bs = 1 << blkszbits
    plans = _collect(root)
    build_time = _most_common_mtime(plans)
    devt_end = SUPER_OFFSET + SUPER_BLOCK.size + len(devices) * DEVICE_SLOT.size
    shared_area, shared_ids = _plan_xattrs(plans)
    xattr_blkaddr = _align(devt_end, bs) // bs if shared_area else 0
    meta_start = xattr_blkaddr * bs + len(shared_area) if shared_area else devt_end
    chunkbits = chunk_size.bit_length() - 1
    for plan in plans:
        _plan_size(plan, shared_ids, build_time, chunk_size, bs)
    cursor = _place(plans, meta_start, bs, chunk_size)
    total_blocks = _allocate_blocks(plans, _align(cursor, bs) // bs, bs)
    # the checksummed span after the superblock must lie inside the image
    total_blocks = max(total_blocks, -(-(SUPER_OFFSET + superblock_checksum_length(bs)) // bs))
    by_node = {plan.node: plan for plan in plans}
    for plan in plans:
        if plan.node.is_dir:
            plan.data = _directory_bytes(plan, by_node, bs)
            assert len(plan.data) == plan.size

    image = bytearray(total_blocks * bs)
    slot_base = SUPER_OFFSET + SUPER_BLOCK.size
    for i, device in enumerate(devices):
        at = slot_base + i * DEVICE_SLOT.size
        image[at:at + DEVICE_SLOT.size] = device.pack()
    if shared_area:
        image[xattr_blkaddr * bs:xattr_blkaddr * bs + len(shared_area)] = shared_area
    any_chunked = False
    for plan in plans:
        any_chunked |= plan.layout == LAYOUT_CHUNK_BASED
        _write_inode(image, plan, bs, build_time, chunkbits - blkszbits)

    sb = Superblock(
        feature_compat=FEATURE_COMPAT_SB_CHKSUM | FEATURE_COMPAT_MTIME,
        blkszbits=blkszbits, root_nid=by_node[root].nid, inos=len(plans),
        build_time=build_time[0], build_time_nsec=build_time[1], blocks=total_blocks,
        meta_blkaddr=0, xattr_blkaddr=xattr_blkaddr, uuid=uuid,
        feature_incompat=(FEATURE_INCOMPAT_DEVICE_TABLE if devices else 0)
        | (FEATURE_INCOMPAT_CHUNKED_FILE if any_chunked else 0),
        extra_devices=len(devices), devt_slotoff=slot_base // DEVICE_SLOT.size)
    if by_node[root].nid > _U16:
        raise BuildError("root inode does not fit a 16-bit nid")
    image[SUPER_OFFSET:SUPER_OFFSET + SUPER_BLOCK.size] = sb.pack()
    span = image[SUPER_OFFSET:SUPER_OFFSET + superblock_checksum_length(bs)]
    checksum = superblock_checksum(bytes(span))
    image[SUPER_OFFSET + 4:SUPER_OFFSET + 8] = checksum.to_bytes(4, "little")
    return bytes(image)


def _collect(root: Node) -> list[_Plan]:
    """Every distinct inode, breadth first in name order, with link counts."""
    plans = {root: _Plan(root, parent=root)}
    queue = collections.deque([root])
    while queue:
        directory = queue.popleft()
        for name in sorted(directory.children):
            child = directory.children[name]
            plan = plans.get(child)
            if plan is None:
                plan = plans[child] = _Plan(child, parent=directory)
                if child.is_dir:
                    queue.append(child)
            elif child.is_dir:
                raise BuildError(f"{child.origin}: directory reachable by two names")
            plan.nlink += 1
    for plan in plans.values():
        if plan.node.is_dir:
            plan.nlink = 2 + sum(c.is_dir for c in plan.node.children.values())
    return list(plans.values())


def _most_common_mtime(plans: list[_Plan]) -> tuple[int, int]:
    counts = collections.Counter((p.node.mtime, p.node.mtime_nsec) for p in plans)
    best = max(counts.values())
    return min(key for key, n in counts.items() if n == best)


def _plan_xattrs(plans: list[_Plan]) -> tuple[bytes, dict[tuple[int, bytes, bytes], int]]:
    """Share every (name, value) pair that two or more inodes carry."""
    uses: collections.Counter[tuple[int, bytes, bytes]] = collections.Counter()
    for plan in plans:
        for name, value in plan.node.xattrs.items():
            split = xattrs.split_name(name)
            if split is None:
                raise BuildError(f"{plan.node.origin}: xattr {name!r} cannot be stored")
            uses[(*split, value)] += 1
    area, ids = bytearray(), {}
    for key in sorted(k for k, n in uses.items() if n >= 2):
        ids[key] = len(area) // 4
        area += xattrs.pack_entry(*key)
    return bytes(area), ids


def _plan_size(plan: _Plan, shared_ids: dict, build_time: tuple[int, int],
               chunk_size: int, bs: int) -> None:
    node = plan.node
    shared, inline = [], []
    for name in sorted(node.xattrs):
        key = (*xattrs.split_name(name), node.xattrs[name])
        if key in shared_ids and len(shared) < MAX_SHARED_PER_INODE:
            shared.append(shared_ids[key])
        else:
            inline.append(xattrs.pack_entry(*key))
    plan.xattr_area, plan.xattr_icount = xattrs.pack_inline(shared, inline)
    if plan.xattr_icount > _U16:
        raise BuildError(f"{node.origin}: too many xattrs for one inode")
    if node.is_dir:
        plan.size = _directory_size([b".", b"..", *node.children], bs)
    elif stat.S_ISLNK(node.mode):
        plan.data = node.target
        plan.size = len(node.target)
    elif node.is_reg:
        plan.size = node.size
        if node.size:
            plan.layout = LAYOUT_CHUNK_BASED
            if len(node.chunks) != -(-node.size // chunk_size):
                raise BuildError(f"{node.origin}: has {len(node.chunks)} chunks for "
                                 f"{node.size} bytes")
    plan.extended = (
        (node.mtime, node.mtime_nsec) != build_time or plan.size > _U32
        or node.uid > _U16 or node.gid > _U16 or plan.nlink > _U16)
    if node.uid > _U32 or node.gid > _U32 or plan.nlink > _U32:
        raise BuildError(f"{node.origin}: uid, gid or link count too large for EROFS")


def _directory_size(names: list[bytes], bs: int) -> int:
    return dirents.directory_size([len(n) for n in sorted(names)], bs)


def _place(plans: list[_Plan], cursor: int, bs: int, chunk_size: int) -> int:
    """Give each inode its position; inline tails never cross a block."""
    for plan in plans:
        pos = _align(cursor, 1 << NID_SHIFT)
        head = plan.head_size
        if plan.layout == LAYOUT_CHUNK_BASED:
            need = _align(head, CHUNK_INDEX.size) + CHUNK_INDEX.size * len(plan.node.chunks)
        elif plan.node.is_dir or stat.S_ISLNK(plan.node.mode):
            tail = plan.size % bs
            need = head
            if tail:
                if pos % bs + head + tail <= bs:
                    plan.layout, need = LAYOUT_FLAT_INLINE, head + tail
                elif head + tail <= bs:
                    pos = _align(pos, bs)
                    plan.layout, need = LAYOUT_FLAT_INLINE, head + tail
        else:
            need = head
        plan.pos = pos
        cursor = pos + need
    return cursor


def _allocate_blocks(plans: list[_Plan], next_block: int, bs: int) -> int:
    """Block addresses for directory and symlink bytes kept outside the inode."""
    for plan in plans:
        if not (plan.node.is_dir or stat.S_ISLNK(plan.node.mode)):
            continue
        blocks = plan.size // bs if plan.layout == LAYOUT_FLAT_INLINE else -(-plan.size // bs)
        if blocks:
            plan.raw_blkaddr = next_block
            next_block += blocks
    return next_block


def _directory_bytes(plan: _Plan, by_node: dict[Node, _Plan], bs: int) -> bytes:
    node = plan.node
    entries = [dirents.Dirent(b".", plan.nid, FT_DIR),
               dirents.Dirent(b"..", by_node[plan.parent].nid, FT_DIR)]
    for name, child in node.children.items():
        entries.append(dirents.Dirent(name, by_node[child].nid, file_type_of(child.mode)))
    entries.sort(key=lambda e: e.name)
    blocks = dirents.pack_blocks(entries, bs)
    return b"".join(b.ljust(bs, b"\0") for b in blocks[:-1]) + blocks[-1]


def _write_inode(image: bytearray, plan: _Plan, bs: int, build_time: tuple[int, int],
                 chunk_format_bits: int) -> None:
    node = plan.node
    if plan.layout == LAYOUT_CHUNK_BASED:
        i_u = CHUNK_FORMAT_INDEXES | chunk_format_bits
    elif stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode):
        i_u = encode_rdev(node.rdev)
    else:
        i_u = plan.raw_blkaddr
    record = InodeRecord(
        extended=plan.extended, layout=plan.layout, xattr_icount=plan.xattr_icount,
        mode=node.mode & 0xFFFF, nlink=plan.nlink, size=plan.size, i_u=i_u,
        ino=plan.nid & _U32, uid=node.uid, gid=node.gid,
        mtime=node.mtime if plan.extended else 0,
        mtime_nsec=node.mtime_nsec if plan.extended else 0)
    pos = plan.pos
    head = record.pack() + plan.xattr_area
    image[pos:pos + len(head)] = head
    after = pos + len(head)
    if plan.layout == LAYOUT_CHUNK_BASED:
        table = b"".join(
            CHUNK_INDEX.pack(0, 0, NULL_ADDR) if blkaddr is None
            else CHUNK_INDEX.pack(0, node.device, blkaddr)
            for blkaddr in node.chunks)
        start = pos + _align(len(head), CHUNK_INDEX.size)
        image[start:start + len(table)] = table
    elif plan.data:
        body_len = plan.size // bs * bs if plan.layout == LAYOUT_FLAT_INLINE else plan.size
        base = plan.raw_blkaddr * bs
        image[base:base + body_len] = plan.data[:body_len]
        tail = plan.data[body_len:]
        image[after:after + len(tail)] = tail
