"""The cachefiles on-demand protocol (Linux 5.19+, CONFIG_CACHEFILES_ONDEMAND).

The daemon opens /dev/cachefiles, binds it in on-demand mode, and reads
one message per read(): OPEN (a cookie: volume key and cookie key, with an
anonymous fd to fill it through), READ (a range of an opened object that
is a hole in the cache) and CLOSE. It answers OPEN with ``copen`` and READ
by writing the range through the object's fd, then an ioctl.
"""

from __future__ import annotations

import dataclasses
import fcntl
import mmap
import os
import struct

from ..posixio import pwrite_all
from .mount import kernel_has

DEVICE = "/dev/cachefiles"
OP_OPEN, OP_CLOSE, OP_READ = 0, 1, 2
MSG = struct.Struct("<IIII")  # msg_id, opcode, len, object_id
OPEN = struct.Struct("<IIII")  # volume_key_size, cookie_key_size, fd, flags
READ = struct.Struct("<QQ")  # off, len
IOC_READ_COMPLETE = (1 << 30) | (4 << 16) | (0x98 << 8) | 1  # _IOW(0x98, 1, int)
PAGE = mmap.PAGESIZE
MAX_MESSAGE = 64 * 1024
assert (MSG.size, OPEN.size, READ.size, IOC_READ_COMPLETE) == (16, 16, 16, 0x40049801)


@dataclasses.dataclass(frozen=True)
class Message:
    msg_id: int
    opcode: int
    object_id: int
    volume_key: str = ""
    cookie_key: str = ""
    fd: int = -1
    offset: int = 0
    length: int = 0


def parse(buf: bytes) -> Message:
    """One message. Keys are cut by the sizes given, never by looking for a NUL."""
    msg_id, opcode, length, object_id = MSG.unpack_from(buf)
    body = buf[MSG.size:length]
    if opcode == OP_OPEN:
        volume_size, cookie_size, fd, _flags = OPEN.unpack_from(body)
        keys = body[OPEN.size:]
        volume = keys[:volume_size]
        if volume.endswith(b"\0"):  # the volume key comes with its NUL, the cookie key without
            volume = volume[:-1]
        cookie = keys[volume_size:volume_size + cookie_size]
        return Message(msg_id, opcode, object_id, volume.decode(errors="replace"),
                       cookie.decode(errors="replace"), fd)
    if opcode == OP_READ:
        offset, count = READ.unpack_from(body)
        return Message(msg_id, opcode, object_id, offset=offset, length=count)
    return Message(msg_id, opcode, object_id)


def open_device(directory: str, tag: str = "erofsd") -> int:
    """Open and bind /dev/cachefiles in on-demand mode, caching under ``directory``."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        for command in (f"dir {directory}", f"tag {tag}", "bind ondemand"):
            os.write(fd, command.encode())
    except OSError:
        os.close(fd)
        raise
    return fd


def read_message(fd: int) -> Message | None:
    try:
        buf = os.read(fd, MAX_MESSAGE)
    except BlockingIOError:
        return None
    return parse(buf) if buf else None


def copen(fd: int, msg_id: int, size_or_error: int) -> None:
    """Answer an OPEN: the object's size, or a negative errno to refuse it."""
    os.write(fd, f"copen {msg_id},{size_or_error}".encode())


def restore(fd: int) -> None:
    """After a failover: have the kernel send the requests the old daemon left."""
    os.write(fd, b"restore")


def write_range(object_fd: int, data: bytes, offset: int, length: int) -> None:
    """Write ``data`` at ``offset`` through an object's fd, padded to ``length``.

    The kernel writes the cache file with O_DIRECT: the buffer and the
    length must be page-aligned, which an anonymous mmap is.
    """
    size = -(-length // PAGE) * PAGE
    with mmap.mmap(-1, size) as buffer:
        buffer[:len(data)] = data
        with memoryview(buffer) as view:
            pwrite_all(object_fd, view, offset)


def complete_read(object_fd: int, msg_id: int) -> None:
    fcntl.ioctl(object_fd, IOC_READ_COMPLETE, msg_id)


def supported() -> str | None:
    """None when the on-demand cachefiles device is here, else why not."""
    if not os.path.exists(DEVICE):
        return f"{DEVICE} does not exist (no CONFIG_CACHEFILES)"
    if not kernel_has("erofs"):
        return "the kernel has no EROFS"
    return None
