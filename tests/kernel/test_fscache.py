"""The cachefiles on-demand wire format (kernel/fscache.py); no root, no /dev/cachefiles."""

from __future__ import annotations

import mmap
import os

from erofsd.kernel import fscache
from erofsd.kernel.fscache import MSG, OP_CLOSE, OP_OPEN, OP_READ, OPEN, READ


def message(msg_id: int, opcode: int, object_id: int, body: bytes) -> bytes:
    return MSG.pack(msg_id, opcode, MSG.size + len(body), object_id) + body


def test_open_keys_are_cut_by_their_sizes():
    volume, cookie = b"erofs,d1\0", b"a1"  # the volume key comes with its NUL
    raw = message(3, OP_OPEN, 9, OPEN.pack(len(volume), len(cookie), 42, 0) + volume + cookie
                  + b"trailing junk")
    assert fscache.parse(raw) == fscache.Message(3, OP_OPEN, 9, "erofs,d1", "a1", 42)


def test_a_cookie_key_with_a_nul_inside_is_kept_whole():
    volume, cookie = b"erofs,x\0", b"ab\0cd"
    raw = message(1, OP_OPEN, 2, OPEN.pack(len(volume), len(cookie), 5, 0) + volume + cookie)
    assert fscache.parse(raw).cookie_key == "ab\0cd"


def test_read_and_close():
    assert fscache.parse(message(4, OP_READ, 9, READ.pack(1 << 33, 65536))) == \
        fscache.Message(4, OP_READ, 9, offset=1 << 33, length=65536)
    assert fscache.parse(message(5, OP_CLOSE, 9, b"")) == fscache.Message(5, OP_CLOSE, 9)


def test_answers_are_the_commands_the_device_takes():
    read_end, write_end = os.pipe()
    try:
        fscache.copen(write_end, 7, 1 << 20)
        assert os.read(read_end, 100) == b"copen 7,1048576"
        fscache.copen(write_end, 8, -2)
        assert os.read(read_end, 100) == b"copen 8,-2"
        fscache.restore(write_end)
        assert os.read(read_end, 100) == b"restore"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_range_is_written_page_padded_at_its_offset(tmp_path):
    path = tmp_path / "object"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fscache.write_range(fd, b"x" * 100, 3 * mmap.PAGESIZE, 100)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert len(data) == 4 * mmap.PAGESIZE  # the length rounded up to a page
    assert data[3 * mmap.PAGESIZE:3 * mmap.PAGESIZE + 100] == b"x" * 100
    assert data[3 * mmap.PAGESIZE + 100:] == bytes(mmap.PAGESIZE - 100)
