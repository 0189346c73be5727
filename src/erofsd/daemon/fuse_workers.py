"""FUSE mounts as worker processes (pyfuse3 serves one session per process).

A worker is started in its own session, so it outlives a daemon that is
killed: its mount keeps working, and a restarted daemon adopts it by pid.
If a worker dies, its readers get ENOTCONN (never zeros); `erofsd umount`
then clears the dead mount and a new `erofsd mount` serves it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from ..errors import ErofsdError
from .mounttable import MountRecord

READY_TIMEOUT = 120


class FuseWorkers:
    def __init__(self, state_dir: Path, log_path: str) -> None:
        self.state_dir = state_dir
        self.log_path = log_path
        self.stats_dir = state_dir / "daemon" / "fuse"
        self.stats_dir.mkdir(parents=True, exist_ok=True)

    def _stats_path(self, mountpoint: str) -> Path:
        return self.stats_dir / (mountpoint.strip("/").replace("/", "_") + ".json")

    async def start(self, record: MountRecord) -> int:
        args = [sys.executable, "-m", "erofsd.paths.fuse", record.image, record.mountpoint,
                "--state-dir", str(self.state_dir), "--fsid", record.fsid,
                "--stats-file", str(self._stats_path(record.mountpoint))]
        if record.domain_id:
            args += ["--domain-id", record.domain_id]
        if record.insecure:
            args.append("--insecure")
        if record.mirror:
            args += ["--mirror", record.mirror]
        return await trio.to_thread.run_sync(self._spawn, args)

    def _spawn(self, args: list[str]) -> int:
        with open(self.log_path, "ab") as log_file:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=log_file, start_new_session=True, close_fds=True)
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith(b"ready") or not line or line.startswith(b"error"):
                break
        process.stdout.close()
        if not line.startswith(b"ready"):
            process.kill()
            process.wait()
            detail = line.decode(errors="replace").strip().split(" ", 2)[-1] if line else \
                "it exited"
            raise ErofsdError(f"the FUSE worker could not serve the image: {detail}")
        return process.pid

    @staticmethod
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

    async def wait_exit(self, pid: int, timeout: float = 10) -> None:
        deadline = trio.current_time() + timeout
        while self.alive(pid):
            if trio.current_time() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            await trio.sleep(0.05)

    def stats(self, mountpoint: str) -> dict:
        try:
            return json.loads(self._stats_path(mountpoint).read_text())
        except (OSError, ValueError):
            return {}

    def forget(self, mountpoint: str) -> None:
        self._stats_path(mountpoint).unlink(missing_ok=True)
