"""mount(2) and umount2(2) called directly, and what the kernel says is mounted.

util-linux `mount` would put a regular file behind a loop device; calling
the syscall with the bootstrap file as source gives a file-backed EROFS
mount (Linux 6.12+), and ``device=`` options name the blob files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from collections.abc import Sequence

MS_RDONLY = 1
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
STATX_TYPE = 0x1
STATX_ATTR_MOUNT_ROOT = 0x2000  # Linux 5.8+
STATX_SIZE = 256  # struct statx
STATX_ATTRIBUTES_AT = 8  # u64 stx_attributes
STATX_ATTRIBUTES_MASK_AT = 56  # u64 stx_attributes_mask, after ino, size and blocks
_statx = getattr(_libc, "statx", None)  # glibc 2.28+
if _statx is not None:
    _statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                       ctypes.c_void_p]


def kernel_has(fstype: str) -> bool:
    """Whether /proc/filesystems lists ``fstype``."""
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())
    except OSError:
        return False


def kernel_has_erofs() -> bool:
    return kernel_has("erofs")


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


def mount_erofs_ondemand(target: str, fsid: str, domain_id: str | None = None) -> None:
    """An EROFS mount over fscache on-demand: the kernel asks the cachefiles daemon."""
    options = f"fsid={fsid}" + (f",domain_id={domain_id}" if domain_id else "")
    mount("none", target, "erofs", MS_RDONLY, options)


def umount(target: str | bytes, *, lazy: bool = False) -> None:
    if _libc.umount2(os.fsencode(target), MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {os.fsdecode(target)}: {os.strerror(err)}")


def unescape_mountinfo(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", "surrogateescape")
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i:i + 1] == b"\\" and raw[i + 1:i + 4].isdigit() and len(raw[i + 1:i + 4]) == 3:
            out.append(int(raw[i + 1:i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def parse_mountinfo(text: str) -> dict[str, str]:
    """mountpoint -> filesystem type, from the text of /proc/self/mountinfo."""
    found = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        found[unescape_mountinfo(fields[4])] = fields[sep + 1]
    return found


def mounted_filesystems() -> dict[str, str]:
    """mountpoint -> filesystem type, as this process's mount namespace has them."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def is_mount_point(path: str) -> bool:
    """Whether something is mounted on ``path``, in constant time where statx(2) says.

    statx's STATX_ATTR_MOUNT_ROOT is right for bind mounts too, where comparing
    st_dev with the parent's is not; where the kernel or libc lacks it, the
    mount table is read instead.
    """
    if _statx is not None:
        buf = ctypes.create_string_buffer(STATX_SIZE)
        if _statx(AT_FDCWD, os.fsencode(path), AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT,
                  STATX_TYPE, buf) == 0:
            attributes, mask = (int.from_bytes(buf.raw[at:at + 8], sys.byteorder)
                                for at in (STATX_ATTRIBUTES_AT, STATX_ATTRIBUTES_MASK_AT))
            if mask & STATX_ATTR_MOUNT_ROOT:
                return bool(attributes & STATX_ATTR_MOUNT_ROOT)
        elif ctypes.get_errno() in (errno.ENOENT, errno.ENOTDIR):
            return False
    return os.path.realpath(path) in mounted_filesystems()
