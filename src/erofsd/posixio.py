"""Positional writes that never stop half way, and reflinks: the ways erofsd writes file bytes.

A bottom module, like ``errors``: it imports nothing of erofsd, and every
package may use it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite(2) until every byte is written; a short write (e.g. on ENOSPC) is not success.

    The kernel may write part of a buffer and report the shortfall only on
    the next call; taking the first count as done would leave zeros behind.
    """
    with memoryview(data) as whole:  # released even on an error: data may be an mmap
        done = 0
        while done < len(whole):
            written = os.pwrite(fd, whole[done:], offset + done)
            if written <= 0:
                raise OSError(errno.EIO, "pwrite wrote nothing")
            done += written


FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range)
CLONE_RANGE = struct.Struct("=qQQQ")  # src_fd, src_offset, src_length, dest_offset
CLONE_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EXDEV, errno.ENOTTY, errno.EINVAL)


def clone_range(src_fd: int, src_offset: int, length: int, dst_fd: int,
                dst_offset: int) -> None:
    """Make [dst_offset, +length) of dst share src's blocks (a reflink: xfs, btrfs).

    Offsets and length must be multiples of the filesystem's block size.
    OSError with an errno in CLONE_UNSUPPORTED where the filesystem (ext4,
    tmpfs) or the alignment does not allow it: copy instead.
    """
    fcntl.ioctl(dst_fd, FICLONERANGE, CLONE_RANGE.pack(src_fd, src_offset, length, dst_offset))
