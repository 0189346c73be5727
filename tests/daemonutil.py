"""A real erofsd daemon per test: its own state dir and socket, cleaned up whatever happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from erofsd.daemon.client import DaemonClient
from erofsd.kernel.mount import mounted_filesystems, umount


class DaemonProc:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.state = root / "state"
        self.socket = str(root / "run" / "erofsd.sock")
        self.log = root / "daemon.log"
        self.process: subprocess.Popen | None = None
        self.client = DaemonClient(self.socket, timeout=300)
        self.start()

    def __enter__(self) -> DaemonProc:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "erofsd", "daemon", "--state-dir", str(self.state),
                 "--socket", self.socket], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.client.running():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def cli(self, *args, check: bool = False) -> subprocess.CompletedProcess:
        env = {**os.environ, "EROFSD_SOCKET": self.socket}
        result = subprocess.run([sys.executable, "-m", "erofsd", *map(str, args)],
                                capture_output=True, env=env, timeout=300)
        if check:
            assert result.returncode == 0, result.stderr.decode()
        return result

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def wait_exit(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def mountpoint(self, name: str) -> str:
        path = self.root / "mnt" / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _processes(self, marker: str) -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if marker.encode() in cmdline and b"erofsd" in cmdline:
                found.append(int(pid))
        return found

    def cleanup(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.client.stop()
                self.process.wait(20)
            except Exception:
                self.process.kill()
                self.process.wait()
        for point in sorted(mounted_filesystems(), reverse=True):
            if point.startswith(str(self.root)):
                try:
                    umount(point, lazy=True)
                except OSError:
                    pass
        for pid in self._processes(str(self.state)):  # the holder, FUSE workers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.client.close()
