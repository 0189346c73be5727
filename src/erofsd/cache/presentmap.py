"""The durable present-map of one cached blob: which chunks hold verified bytes.

File layout: a 4 KiB header, then one byte per chunk-table entry (1 =
present and verified). A byte, not a bit, so two processes marking
neighbouring chunks never race on a read-modify-write.

Crash safety without an fsync per fetch: a chunk's bytes are written
before its map byte, and both live in the page cache, which survives any
process crash. Only a reboot can lose one without the other, so the header
records the boot id under which the map was last trusted; opened under a
different boot, every present chunk is re-verified first (``needs_recovery``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import struct
import time
from collections.abc import Iterator

from ..errors import CorruptImage
from ..posixio import pwrite_all

MAGIC = b"ERFSDPM1"
VERSION = 1
# magic, version, entry count, blob size, data size, table present, boot id,
# fetched bytes, last used, created, bytes filled locally, of those reflinked
# (the last two came later: older maps hold zeros there)
HEADER = struct.Struct("<8sIIQQB7x16sQQQQQ")
HEADER_SIZE = 4096
FLOCK = struct.Struct("=hh4xqqi4x")  # struct flock (64-bit Linux): type, whence, start, len, pid
assert FLOCK.size == 32
PRESENT = 1


def present_on_disk(path: str, index: int) -> bool:
    """Is entry ``index`` of the map at ``path`` marked, as stored now (no map opened)?"""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, 1, HEADER_SIZE + index) == bytes([PRESENT])
    finally:
        os.close(fd)


def current_boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return bytes.fromhex(f.read().strip().replace("-", ""))
    except (OSError, ValueError):
        return bytes(16)


@dataclasses.dataclass
class Header:
    entry_count: int
    blob_size: int
    data_size: int
    table_present: bool = False
    boot_id: bytes = bytes(16)
    fetched_bytes: int = 0
    last_used: int = 0
    created: int = 0
    local_bytes: int = 0
    reflinked_bytes: int = 0

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.entry_count, self.blob_size, self.data_size,
                           int(self.table_present), self.boot_id, self.fetched_bytes,
                           self.last_used, self.created, self.local_bytes,
                           self.reflinked_bytes)

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        magic, version, count, size, data_size, table, boot, *counters = \
            HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            raise CorruptImage("present map has a bad header")
        return cls(count, size, data_size, bool(table), boot, *counters)


class PresentMap:
    """One open map file. Byte-range locks (``locked``) coordinate processes."""

    def __init__(self, path: str, fd: int, header: Header) -> None:
        self.path = path
        self.fd = fd
        self.header = header
        self.bytes = bytearray(os.pread(fd, header.entry_count, HEADER_SIZE))
        if len(self.bytes) != header.entry_count:
            raise CorruptImage(f"{path}: present map is truncated")

    @classmethod
    def create(cls, path: str, entry_count: int, blob_size: int, data_size: int) -> None:
        """Make the map if it is missing (atomically; if two race, the first wins)."""
        header = Header(entry_count, blob_size, data_size, boot_id=current_boot_id(),
                        created=int(time.time()))
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            # zeros written, not a hole: marking a chunk later never needs a new block
            pwrite_all(fd, header.pack().ljust(HEADER_SIZE, b"\0") + bytes(entry_count), 0)
            os.fsync(fd)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.close(fd)
            os.unlink(tmp)

    @classmethod
    def from_fd(cls, path: str, fd: int) -> PresentMap:
        """Take over an open map fd (closed on error)."""
        try:
            return cls(path, fd, Header.unpack(os.pread(fd, HEADER.size, 0)))
        except BaseException:
            os.close(fd)
            raise

    def check_fits(self, entry_count: int, blob_size: int, data_size: int) -> None:
        h = self.header
        if (h.entry_count, h.blob_size, h.data_size) != (entry_count, blob_size, data_size):
            raise CorruptImage(f"{self.path}: present map does not fit the blob")

    @classmethod
    def read_only(cls, path: str) -> PresentMap:
        return cls.from_fd(path, os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- locks --------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, first: int = -1, stop: int = 0) -> Iterator[None]:
        """Exclusive lock on entries [first, stop) across processes; first=-1: the header.

        An open file description's lock (F_OFD_SETLKW), not lockf's: a process's
        lockf locks on a file all go when it closes *any* fd of that file, and
        listings, GC and the chunk index open and close maps that readers hold."""
        start, length = (0, HEADER_SIZE) if first < 0 else (HEADER_SIZE + first, stop - first)
        fcntl.fcntl(self.fd, fcntl.F_OFD_SETLKW,
                    FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
        try:
            yield
        finally:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK,
                        FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, start, length, 0))

    # -- entries ------------------------------------------------------------

    def is_present(self, index: int) -> bool:
        return self.bytes[index] == PRESENT

    def any_present(self) -> bool:
        return PRESENT in self.bytes

    def all_present(self) -> bool:
        return self.bytes.count(PRESENT) == len(self.bytes)  # in C: asked after every event

    def refresh(self, first: int, stop: int) -> None:
        """Re-read entries another process may have marked."""
        self.bytes[first:stop] = os.pread(self.fd, stop - first, HEADER_SIZE + first)

    def read_disk(self) -> bytes:
        """The flags as stored now (other processes' marks included), without adopting them."""
        return os.pread(self.fd, self.header.entry_count, HEADER_SIZE)

    def mark(self, first: int, stop: int) -> None:
        """Entries [first, stop) now hold verified bytes (written before this call)."""
        pwrite_all(self.fd, bytes([PRESENT]) * (stop - first), HEADER_SIZE + first)
        self.bytes[first:stop] = bytes([PRESENT]) * (stop - first)

    def clear(self, index: int) -> None:
        pwrite_all(self.fd, b"\0", HEADER_SIZE + index)
        self.bytes[index] = 0

    def present_indexes(self) -> list[int]:
        return [i for i, b in enumerate(self.bytes) if b == PRESENT]

    # -- header fields ------------------------------------------------------

    def update_header(self, **changes) -> None:
        """Read-modify-write of the header under its lock (counters add up across processes)."""
        with self.locked():
            header = Header.unpack(os.pread(self.fd, HEADER.size, 0))
            for name, value in changes.items():
                if name.startswith("add_"):
                    field = name[4:] + "_bytes"
                    setattr(header, field, getattr(header, field) + value)
                else:
                    setattr(header, name, value)
            pwrite_all(self.fd, header.pack(), 0)
            self.header = header

    def reload_header(self) -> Header:
        self.header = Header.unpack(os.pread(self.fd, HEADER.size, 0))
        return self.header

    @property
    def needs_recovery(self) -> bool:
        return self.header.boot_id != current_boot_id()

