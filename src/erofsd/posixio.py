"""Positional writes that never stop half way: the one way erofsd writes file bytes.

A bottom module, like ``errors``: it imports nothing of erofsd, and every
package may use it.
"""

from __future__ import annotations

import errno
import os


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
