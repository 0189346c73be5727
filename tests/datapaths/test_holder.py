"""The holder (datapaths/holder.py): its messages; a real one keeps fds for the next daemon."""

from __future__ import annotations

import array
import os
import socket
import subprocess
import sys
import time

import pytest

from erofsd.datapaths import holder


def test_messages_travel_with_their_fds():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    read_end, write_end = os.pipe()
    try:
        holder.send(left, {"keep": "cachefiles", "n": [1, 2]}, [write_end, read_end])
        message, fds = holder.receive(right)
        assert message == {"keep": "cachefiles", "n": [1, 2]} and len(fds) == 2
        os.write(fds[0], b"through the passed fd")  # a copy of write_end
        assert os.read(read_end, 100) == b"through the passed fd"
        for fd in fds:
            os.close(fd)
        holder.send(left, {"answer": 3, "allow": True, "errno": 0})
        assert holder.receive(right) == ({"answer": 3, "allow": True, "errno": 0}, [])
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        left.close()
        right.close()


def test_a_peer_gone_is_none_and_its_fds_are_closed():
    read_end, write_end = os.pipe()
    passed = os.dup(write_end)  # as recvmsg hands it over
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [passed]).tobytes())]
    try:
        assert holder.unpack(b"", ancillary) == (None, [])
        with pytest.raises(OSError):
            os.fstat(passed)
    finally:
        os.close(read_end)
        os.close(write_end)


def _connect(path: str, deadline: float) -> socket.socket:
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(path)
            return conn
        except OSError:
            conn.close()
            assert time.monotonic() < deadline, "the holder never listened"
            time.sleep(0.02)


def test_a_kept_fd_is_handed_to_the_next_daemon(tmp_path):
    path = str(tmp_path / "holder.sock")
    process = subprocess.Popen([sys.executable, "-m", "erofsd.datapaths.holder", path],
                               stderr=subprocess.PIPE)
    read_end, write_end = os.pipe()
    try:
        first = _connect(path, time.monotonic() + 20)
        hello, fds = holder.receive(first)
        assert hello["kept"] == []
        for fd in fds:  # the fanotify group, when the kernel has one
            os.close(fd)
        holder.send(first, {"keep": "device"}, [write_end])
        first.close()  # the daemon dies
        second = _connect(path, time.monotonic() + 20)
        hello, fds = holder.receive(second)
        assert hello["kept"] == ["device"]
        kept = fds[-1]
        os.write(kept, b"kept across daemons")
        assert os.read(read_end, 100) == b"kept across daemons"
        for fd in fds:
            os.close(fd)
        holder.send(second, {"shutdown": True})
        assert process.wait(timeout=20) == 0
        second.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(read_end)
        os.close(write_end)
