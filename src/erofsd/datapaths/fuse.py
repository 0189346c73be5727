"""The FUSE data path: one worker process per mount serves the userspace reader.

pyfuse3 runs one session per process, so each FUSE mount is a worker
(``fuse_worker.py``), started in its own session: it outlives a daemon that
is killed, its mount keeps working, and a restarted daemon adopts it by
pid. The worker is handed the daemon's mount record, pinned manifest
included, so it serves exactly the image the registry counted, however the
tag moves meanwhile. If a worker dies, its readers get ENOTCONN (never
zeros); `erofsd umount` then clears the dead mount and a new `erofsd mount`
serves it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import trio

from ..errors import ErofsdError
from .base import DataPath, Mount, unmount

READY_TIMEOUT = 120


class FusePath(DataPath):
    name: ClassVar[str] = "fuse"

    def __init__(self, state_dir: Path, log_path: str) -> None:
        self.state_dir = state_dir
        self.log_path = log_path
        self.stats_dir = state_dir / "daemon" / "fuse"
        self.stats_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def problem() -> str | None:
        return None if os.path.exists("/dev/fuse") else "/dev/fuse does not exist"

    # -- the interface ----------------------------------------------------------------

    def still_mounted(self, fstype: str | None) -> bool:
        return bool(fstype) and fstype.startswith("fuse")

    async def attach(self, mount: Mount) -> None:
        args = [sys.executable, "-m", "erofsd.datapaths.fuse_worker",
                "--state-dir", str(self.state_dir),
                "--stats-file", str(self._stats_path(mount.mountpoint))]
        mount.worker_pid = await trio.to_thread.run_sync(self._spawn, args, mount.dumps())

    async def adopt(self, mount: Mount) -> None:
        pass  # the worker kept serving; status tells whether it still lives

    async def detach(self, mount: Mount, *, lazy: bool) -> None:
        await unmount(mount.mountpoint, lazy=lazy, busy_hint=" (or use --lazy)")
        if not lazy:
            await self._wait_exit(mount.worker_pid)
        self._stats_path(mount.mountpoint).unlink(missing_ok=True)

    def describe(self, mount: Mount) -> dict:
        return {"worker_pid": mount.worker_pid,
                "state": "ok" if alive(mount.worker_pid) else "broken"}

    def blob_stats(self, mount: Mount) -> dict:
        try:
            return json.loads(self._stats_path(mount.mountpoint).read_text())
        except (OSError, ValueError):
            return {}

    # -- workers ------------------------------------------------------------------------

    def _stats_path(self, mountpoint: str) -> Path:
        return self.stats_dir / (mountpoint.strip("/").replace("/", "_") + ".json")

    def _spawn(self, args: list[str], record: str) -> int:
        with open(self.log_path, "ab") as log_file:
            process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=log_file, start_new_session=True, close_fds=True)
        try:
            process.stdin.write(record.encode())
            process.stdin.close()
        except BrokenPipeError:
            pass  # it exited at once: its stdout says why
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith(b"ready") or not line or line.startswith(b"error"):
                break
        process.stdout.close()
        if line.startswith(b"ready"):
            return process.pid
        process.kill()
        process.wait()
        word, code, detail = (line.decode(errors="replace").strip().split(" ", 2) + ["", ""])[:3]
        if word != "error" or not code.isdigit():
            code, detail = "5", "it exited"
        raise ErofsdError(f"the FUSE worker could not serve the image: {detail}",
                          errno=int(code))

    @staticmethod
    async def _wait_exit(pid: int | None, timeout: float = 10) -> None:
        deadline = trio.current_time() + timeout
        while alive(pid):
            if trio.current_time() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            await trio.sleep(0.05)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # our own child that exited: reap it, it is not alive
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
