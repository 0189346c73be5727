"""Extract an image into a directory, keeping everything a tree can hold.

Every entry is created by us, with O_EXCL/O_NOFOLLOW semantics, under
directories we made, so nothing in the image (a symlink to /etc, a name
repeated twice) can make us write outside DEST. Holes stay holes.
Directory modes and times are applied last, deepest first, so that a
read-only directory can still be filled and its mtime survives.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Callable

from ..errors import AlreadyExists, ErofsdError
from ..posixio import pwrite_all
from .image import Image
from .inode import Inode

PIECE = 1 << 20
BLOCK = 4096
ZERO_BLOCK = bytes(BLOCK)


@dataclasses.dataclass
class ExtractReport:
    entries: int = 0
    file_bytes: int = 0
    skipped_xattrs: list[str] = dataclasses.field(default_factory=list)


def extract(image: Image, dest: str, *, progress: Callable[[int], None] | None = None
            ) -> ExtractReport:
    root = os.fsencode(dest)
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        if not os.path.isdir(root) or os.listdir(root):
            raise AlreadyExists(f"{dest} exists and is not an empty directory") from None
    report = ExtractReport()
    first_path: dict[int, bytes] = {}
    directories: list[tuple[bytes, Inode]] = []
    owners = os.geteuid() == 0
    for path, inode in image.walk():
        if path == b"/":
            directories.append((root, inode))
            continue
        target = root + path
        try:
            _create(image, inode, target, first_path, report, progress)
        except OSError as e:
            raise ErofsdError(f"cannot create {os.fsdecode(target)}: {e.strerror}",
                              errno=e.errno or errno.EIO) from None
        report.entries += 1
        if inode.is_dir:
            directories.append((target, inode))
        elif first_path.get(inode.nid) == target:
            _apply_metadata(image, inode, target, owners, report)
    for target, inode in reversed(directories):
        _apply_metadata(image, inode, target, owners, report)
    return report


def _create(image: Image, inode: Inode, target: bytes, first_path: dict[int, bytes],
            report: ExtractReport, progress: Callable[[int], None] | None) -> None:
    mode = inode.mode
    if stat.S_ISDIR(mode):
        os.mkdir(target, 0o700)
        return
    if inode.nid in first_path:
        os.link(first_path[inode.nid], target, follow_symlinks=False)
        return
    first_path[inode.nid] = target
    if stat.S_ISREG(mode):
        _write_file(image, inode, target, progress)
        report.file_bytes += inode.size
    elif stat.S_ISLNK(mode):
        os.symlink(image.readlink(inode), target)
    else:
        os.mknod(target, stat.S_IFMT(mode) | 0o600, inode.stat().rdev)


def _write_file(image: Image, inode: Inode, target: bytes,
                progress: Callable[[int], None] | None) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        for offset in range(0, inode.size, PIECE):
            data = image.read(inode, offset, PIECE)
            _write_sparse(fd, data, offset)
            if progress:
                progress(len(data))
        os.ftruncate(fd, inode.size)
    finally:
        os.close(fd)


def _write_sparse(fd: int, data: bytes, offset: int) -> None:
    """Write the runs of non-zero blocks; all-zero blocks stay holes."""
    if data.count(0) == len(data):
        return
    view = memoryview(data)
    start = None
    for at in range(0, len(data), BLOCK):
        zero = view[at:at + BLOCK] == ZERO_BLOCK[:len(view[at:at + BLOCK])]
        if not zero and start is None:
            start = at
        elif zero and start is not None:
            pwrite_all(fd, view[start:at], offset + start)
            start = None
    if start is not None:
        pwrite_all(fd, view[start:], offset + start)


def _apply_metadata(image: Image, inode: Inode, target: bytes, owners: bool,
                    report: ExtractReport) -> None:
    st = inode.stat()
    for name, value in image.xattrs(inode):
        try:
            os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            report.skipped_xattrs.append(f"{os.fsdecode(target)}: {os.fsdecode(name)}")
    is_link = stat.S_ISLNK(st.mode)
    if owners:
        os.chown(target, st.uid, st.gid, follow_symlinks=False)
    if not is_link:
        os.chmod(target, stat.S_IMODE(st.mode))
    os.utime(target, ns=(st.mtime_ns, st.mtime_ns), follow_symlinks=False)
