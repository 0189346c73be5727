"""fanotify pre-content events (Linux 6.14+): the kernel asks before it reads a file.

A group of class FAN_CLASS_PRE_CONTENT marks a file with FAN_PRE_ACCESS;
every read (and write) of that file then waits until the group answers
the event. Each event carries a file range, and an fd opened without
notifications, through which the range can be filled. The answer is
FAN_ALLOW, or FAN_DENY with an errno the reader gets instead of data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
import struct
import tempfile

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_PRE_CONTENT = 0x8
FAN_UNLIMITED_QUEUE = 0x10
FAN_UNLIMITED_MARKS = 0x20
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_PRE_ACCESS = 0x00100000
FAN_ALLOW = 0x01
FAN_DENY = 0x02
FAN_EVENT_INFO_TYPE_RANGE = 6
AT_FDCWD = -100
# errnos a pre-content denial may carry (others are refused by the kernel)
DENY_ERRNOS = frozenset({errno.EPERM, errno.EIO, errno.EBUSY, errno.ETXTBSY, errno.EAGAIN,
                         errno.ENOSPC, errno.EDQUOT})

METADATA = struct.Struct("<IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
INFO_HEADER = struct.Struct("<BBH")  # info_type, pad, len
RANGE = struct.Struct("<4xIQQ")  # header, pad, offset, count
RESPONSE = struct.Struct("<iI")  # fd, response
assert (METADATA.size, INFO_HEADER.size, RANGE.size, RESPONSE.size) == (24, 4, 24, 8)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                ctypes.c_char_p]


@dataclasses.dataclass(frozen=True)
class Event:
    mask: int
    fd: int  # opened without notifications; the reader of this event closes it
    pid: int
    offset: int
    count: int


def init_group(nonblocking: bool = False) -> int:
    flags = FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS
    if nonblocking:
        flags |= FAN_NONBLOCK
    fd = _libc.fanotify_init(flags, os.O_RDWR | os.O_LARGEFILE)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_init(FAN_CLASS_PRE_CONTENT): {os.strerror(err)}")
    return fd


def mark(group: int, path: str, *, remove: bool = False) -> None:
    flags = FAN_MARK_REMOVE if remove else FAN_MARK_ADD
    if _libc.fanotify_mark(group, flags, FAN_PRE_ACCESS, AT_FDCWD, os.fsencode(path)) != 0:
        err = ctypes.get_errno()
        if remove and err == errno.ENOENT:
            return  # not marked: nothing to remove
        raise OSError(err, f"fanotify_mark {path}: {os.strerror(err)}")


def parse_events(buf: bytes) -> list[Event]:
    """The events of one read(2) of the group; a torn or short record ends the list."""
    events, pos = [], 0
    while pos + METADATA.size <= len(buf):
        event_len, _vers, _, metadata_len, mask, fd, pid = METADATA.unpack_from(buf, pos)
        end = pos + event_len
        if event_len < METADATA.size or metadata_len < METADATA.size or end > len(buf):
            break
        offset = count = 0
        info = pos + metadata_len
        while info + INFO_HEADER.size <= end:
            info_type, _, info_len = INFO_HEADER.unpack_from(buf, info)
            if info_len < INFO_HEADER.size or info + info_len > end:
                break
            if info_type == FAN_EVENT_INFO_TYPE_RANGE and info_len >= RANGE.size:
                _, offset, count = RANGE.unpack_from(buf, info)
            info += info_len
        events.append(Event(mask, fd, pid, offset, count))
        pos = end
    return events


def response(fd: int, allow: bool, error: int = errno.EIO) -> bytes:
    if allow:
        return RESPONSE.pack(fd, FAN_ALLOW)
    code = error if error in DENY_ERRNOS else errno.EIO
    return RESPONSE.pack(fd, FAN_DENY | (code & 0xFF) << 24)


def supported() -> str | None:
    """None when pre-content events work here, else why not.

    Older kernels accept the group class but not the FAN_PRE_ACCESS mask,
    so a real mark on a scratch file decides.
    """
    try:
        fd = init_group()
    except OSError as e:
        return f"fanotify pre-content events are unavailable: {e.strerror}"
    try:
        with tempfile.NamedTemporaryFile(prefix=".erofsd-fanotify-probe-") as probe:
            mark(fd, probe.name)
    except OSError as e:
        return f"fanotify cannot mark files for pre-content events: {e.strerror}"
    finally:
        os.close(fd)
    return None
