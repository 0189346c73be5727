"""mount(2) and umount2(2) for EROFS, called directly.

util-linux `mount` would put a regular file behind a loop device; calling
the syscall with the bootstrap file as source gives a file-backed EROFS
mount (Linux 6.12+), and ``device=`` options name the blob files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Sequence

MS_RDONLY = 1
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def kernel_has_erofs() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "erofs" for line in f if line.strip())
    except OSError:
        return False


def mount(source: str | bytes, target: str | bytes, fstype: str, flags: int,
          data: str | bytes | None) -> None:
    encoded = os.fsencode(data) if data is not None else None
    if _libc.mount(os.fsencode(source), os.fsencode(target), fstype.encode(), flags,
                   encoded) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {os.fsdecode(target)}: {os.strerror(err)}")


def erofs_options(devices: Sequence[str]) -> str:
    for device in devices:
        if "," in device:
            raise OSError(errno.EINVAL, f"a device path with ',' cannot be passed: {device}")
    return ",".join(f"device={d}" for d in devices)


def mount_erofs(bootstrap: str, target: str, devices: Sequence[str] = (),
                extra_options: str = "") -> None:
    """A read-only, file-backed EROFS mount of ``bootstrap`` with its blob files."""
    options = ",".join(o for o in (erofs_options(devices), extra_options) if o)
    mount(bootstrap, target, "erofs", MS_RDONLY, options or None)


def umount(target: str | bytes, *, lazy: bool = False) -> None:
    if _libc.umount2(os.fsencode(target), MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {os.fsdecode(target)}: {os.strerror(err)}")
