"""The holder: a small process that keeps the daemon's kernel fds, so a daemon can die.

If the last fd of a pre-content group closes, the kernel lets every
pending read through and unfilled ranges read as zeros. So the group
lives here, in a process that does almost nothing and so does not crash:
it reads the events itself, forwards each one (with its fd) to whichever
daemon is connected, and keeps it until that daemon answers. When a daemon
dies, the holder keeps the unanswered events; the next daemon to connect
gets the group fd (to add and remove marks) and every pending event again.
Readers wait meanwhile; none is let through unfilled.

It keeps other fds for the next daemon too: the /dev/cachefiles fd of the
fscache mode, whose cache would unbind if its last fd closed. On a kernel
without pre-content events there is no group, only kept fds.

Wire protocol over a SOCK_SEQPACKET Unix socket, one JSON object per
message, fds passed with SCM_RIGHTS:

    holder -> daemon  {"group": bool, "kept": [names]}  + group fd (if any), kept fds
    holder -> daemon  {"event": id, "mask", "pid", "offset", "count"} + event fd
    daemon -> holder  {"answer": id, "allow": bool, "errno": n}
    daemon -> holder  {"keep": name} + fd      {"drop": name}
    daemon -> holder  {"shutdown": true}   (exit once no event is pending)
"""

from __future__ import annotations

import array
import json
import logging
import os
import select
import socket
import sys
from collections.abc import Sequence

from ..kernel import fanotify

log = logging.getLogger("erofsd.holder")
MAX_MESSAGE = 64 * 1024
ANCILLARY = socket.CMSG_LEN(16 * array.array("i").itemsize)


def pack(message: dict, fds: Sequence[int] = ()) -> tuple[list[bytes], list]:
    """Arguments for sendmsg: the JSON message, and the fds as SCM_RIGHTS."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    return [json.dumps(message).encode()], ancillary


def unpack(data: bytes, ancdata: list) -> tuple[dict | None, list[int]]:
    """(message, fds) from recvmsg; message None when the peer has gone."""
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


def send(sock: socket.socket, message: dict, fds: Sequence[int] = ()) -> None:
    sock.sendmsg(*pack(message, fds))


def receive(sock: socket.socket) -> tuple[dict | None, list[int]]:
    data, ancdata, _, _ = sock.recvmsg(MAX_MESSAGE, ANCILLARY)
    return unpack(data, ancdata)


class Holder:
    def __init__(self, socket_path: str) -> None:
        try:
            self.group: int | None = fanotify.init_group(nonblocking=True)
        except OSError as e:
            log.info("no fanotify group (%s): keeping fds only", e.strerror)
            self.group = None
        self.kept: dict[str, int] = {}
        self.pending: dict[int, fanotify.Event] = {}
        self.next_id = 1
        self.daemon: socket.socket | None = None
        self.shutting_down = False
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o077)
        try:
            self.listener.bind(socket_path)
        finally:
            os.umask(old)
        self.listener.listen(4)

    def run(self) -> None:
        while not (self.shutting_down and not self.pending):
            readable = [self.listener] + ([self.group] if self.group is not None else []) \
                + ([self.daemon] if self.daemon else [])
            ready, _, _ = select.select(readable, [], [], 1.0)
            if self.group is not None and self.group in ready:
                self._read_events()
            if self.listener in ready:
                self._accept()
            if self.daemon is not None and self.daemon in ready:
                self._read_answer()
        log.info("holder exits: asked to, and no event is pending")

    def _read_events(self) -> None:
        try:
            buf = os.read(self.group, 64 * 1024)
        except BlockingIOError:
            return
        for event in fanotify.parse_events(buf):
            if event.fd < 0:
                continue  # a queue overflow: nothing to answer
            event_id = self.next_id
            self.next_id += 1
            self.pending[event_id] = event
            self._forward(event_id, event)

    def _forward(self, event_id: int, event: fanotify.Event) -> None:
        if self.daemon is None:
            return  # it waits for the next daemon
        try:
            send(self.daemon, {"event": event_id, "mask": event.mask, "pid": event.pid,
                               "offset": event.offset, "count": event.count}, [event.fd])
        except OSError:
            self._drop_daemon()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        if self.daemon is not None:  # a new daemon takes over
            self._drain()  # what the old one sent before it went still counts (a "keep")
            self._drop_daemon()
        self.daemon = conn
        log.info("daemon connected; re-sending %d pending event(s)", len(self.pending))
        names = sorted(self.kept)
        fds = ([self.group] if self.group is not None else []) + [self.kept[n] for n in names]
        try:
            send(conn, {"group": self.group is not None, "kept": names}, fds)
        except OSError:
            self._drop_daemon()
            return
        for event_id, event in sorted(self.pending.items()):
            self._forward(event_id, event)

    def _drain(self) -> None:
        while self.daemon is not None and select.select([self.daemon], [], [], 0)[0]:
            self._read_answer()

    def _read_answer(self) -> None:
        try:
            message, fds = receive(self.daemon)
        except (OSError, ValueError):
            message, fds = None, []
        if message is None:
            self._drop_daemon()
            return
        if "keep" in message and fds:
            old = self.kept.pop(message["keep"], None)
            if old is not None:
                os.close(old)
            self.kept[message["keep"]] = fds.pop(0)
        if "drop" in message:
            old = self.kept.pop(message["drop"], None)
            if old is not None:
                os.close(old)
        for fd in fds:
            os.close(fd)
        if message.get("shutdown"):
            self.shutting_down = True
            return
        event = self.pending.pop(message.get("answer"), None)
        if event is None:
            return
        allow = bool(message.get("allow"))
        try:
            os.write(self.group, fanotify.response(event.fd, allow, message.get("errno", 5)))
        finally:
            os.close(event.fd)

    def _drop_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.close()
            self.daemon = None
            log.warning("daemon disconnected; %d event(s) wait for the next one",
                        len(self.pending))


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="erofsd-holder: %(levelname)s %(message)s")
    Holder(args[0]).run()


if __name__ == "__main__":
    main()
