"""The daemon's connection to the holder (holder.py), which it starts if none runs."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time

import trio

from ..errors import ErofsdError
from .holder import ANCILLARY, MAX_MESSAGE, pack, unpack


class HolderLink:
    def __init__(self, socket_path: str, log_path: str) -> None:
        self.socket_path = socket_path
        self.log_path = log_path
        self.group: int | None = None  # the fanotify group, if the kernel has one
        self.kept: dict[str, int] = {}  # fds the holder kept for us (e.g. "cachefiles")
        self._conn: trio.socket.SocketType | None = None
        self._send_lock = trio.Lock()
        self._thread_conn: socket.socket | None = None  # the same connection, for threads

    def _start_holder(self) -> None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(self.socket_path)
            return  # a holder lives: we take over from the daemon before us
        except OSError:
            pass
        finally:
            probe.close()
        with open(self.log_path, "ab") as log_file:
            subprocess.Popen([sys.executable, "-m", "erofsd.datapaths.holder", self.socket_path],
                             stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                             start_new_session=True, close_fds=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket_path):
            if time.monotonic() > deadline:
                raise ErofsdError("the holder process did not start")
            time.sleep(0.02)

    async def connect(self) -> None:
        await trio.to_thread.run_sync(self._start_holder)
        conn = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for _ in range(100):
            try:
                await conn.connect(self.socket_path)
                break
            except OSError:
                await trio.sleep(0.05)
        else:
            raise ErofsdError(f"cannot reach the holder at {self.socket_path}")
        self._conn = conn
        if self._thread_conn is not None:
            self._thread_conn.close()
        self._thread_conn = socket.socket(fileno=os.dup(conn.fileno()))
        hello, fds = await self.receive()
        if hello is None or "group" not in hello:
            raise ErofsdError("the holder did not greet")
        if hello["group"]:
            self.group = fds.pop(0)
        self.kept = dict(zip(hello.get("kept", []), fds, strict=True))

    async def receive(self) -> tuple[dict | None, list[int]]:
        data, ancdata, _, _ = await self._conn.recvmsg(MAX_MESSAGE, ANCILLARY)
        return unpack(data, ancdata)

    async def send(self, message: dict, fds: list[int] | tuple = ()) -> None:
        async with self._send_lock:  # one sender at a time on a trio socket
            await self._conn.sendmsg(*pack(message, fds))

    def send_from_thread(self, message: dict) -> None:
        """Send from a worker thread, without the event loop: one datagram, which a
        SEQPACKET socket delivers whole however many threads send at once."""
        conn = self._thread_conn
        if conn is None:
            raise ErofsdError("not connected to the holder")
        data, ancillary = pack(message)
        while True:
            try:
                conn.sendmsg(data, ancillary)
                return
            except BlockingIOError:  # the socket is the loop's, non-blocking: wait for room
                select.select([], [conn], [], 1.0)

    async def keep(self, name: str, fd: int) -> None:
        await self.send({"keep": name}, [fd])
        self.kept[name] = fd

    async def shutdown(self) -> None:
        if self._conn is not None:
            await self.send({"shutdown": True})
