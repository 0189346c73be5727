"""One daemon per state directory: an flock its daemon holds for as long as it runs.

Two daemons on one state directory would fight over the holder, the cache
files' marks and mounts.json. The lock file also says who holds it (pid and
socket), so a client that finds it taken can wait for that daemon instead
of starting another one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

from ..errors import Busy


class StateLock:
    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.path = Path(state_dir) / "daemon" / "lock"
        self._fd = -1

    def acquire(self, socket_path: str) -> None:
        """Take the lock for this process's life, or raise Busy naming the daemon that has it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder() or {}
            raise Busy(f"another erofsd daemon (pid {holder.get('pid', '?')}, socket "
                       f"{holder.get('socket', '?')}) serves the state directory "
                       f"{self.path.parent.parent}", errno=errno.EBUSY) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "socket": socket_path}).encode(), 0)
        self._fd = fd  # kept open (close-on-exec: no child inherits it) until the process ends

    def holder(self) -> dict | None:
        """{"pid", "socket"} of the daemon holding the lock, or None when no daemon does."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(os.pread(fd, 4096, 0) or b"{}")
                except ValueError:
                    return {}  # taken, and being written this very moment
            return None
        finally:
            os.close(fd)
