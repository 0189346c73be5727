"""A real erofsd daemon per test: its own state dir and socket, cleaned up whatever happens."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from erofsd.daemon.client import DaemonClient, DaemonNotRunning
from erofsd.kernel.mount import mounted_filesystems, umount


def wait_until(condition, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the state never came"
        time.sleep(0.02)


def exchange(path: str, data: bytes, *, wait: float = 20) -> tuple[int, dict, bytes, float]:
    """Raw bytes to a control socket, the whole answer back: (status, headers, body, seconds)."""
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(wait)
        conn.connect(path)
        conn.sendall(data)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body, time.monotonic() - started


def post(path: str, route: str, body: bytes) -> tuple[int, dict | bytes]:
    """A POST with ``body`` as it is (no JSON encoding on our side): (status, answer)."""
    status, _, reply, _ = exchange(path, b"POST %s HTTP/1.1\r\nHost: erofsd\r\n"
                                         b"Content-Length: %d\r\n\r\n" % (route.encode(),
                                                                            len(body)) + body)
    return status, json.loads(reply) if reply.startswith(b"{") else reply


class DaemonProc:
    def __init__(self, root: Path, *args: str) -> None:
        """``args``: more options of ``erofsd daemon`` (``--config FILE``, say)."""
        self.root = root
        self.args = args
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

    def start(self, *, wait: bool = True) -> None:
        """Start the daemon; with ``wait``, return once it has taken its mounts back."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "erofsd", "daemon", "--state-dir", str(self.state),
                 "--socket", self.socket, *self.args], stdout=log, stderr=log,
                start_new_session=True)
        deadline = time.monotonic() + 30
        while wait and not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def wait_for(self, condition, timeout: float = 120) -> dict:
        """The daemon's status once ``condition(status)`` holds: a state, never a time."""
        found = {}

        def reached() -> bool:
            found["status"] = self.client.status()
            return condition(found["status"])

        wait_until(reached, timeout)
        return found["status"]

    def ready(self) -> bool:
        try:
            return self.client.status()["daemon"]["state"] == "ready"
        except DaemonNotRunning:
            return False

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

    def cleanup(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.client.stop()
                self.process.wait(20)
            except Exception:
                self.process.kill()
                self.process.wait()
        self.client.close()
        sweep(self.root, self.state)


def processes_with(*markers: str) -> list[int]:
    """Pids whose command line holds every marker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(marker in cmdline for marker in markers):
            found.append(int(pid))
    return found


def erofsd_processes(*markers: str) -> list[int]:
    """Pids of erofsd processes (daemons, holders, FUSE workers) with every marker."""
    return processes_with("erofsd", *markers)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def terminate(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def unmount_under(root: Path) -> None:
    for point in sorted(mounted_filesystems(), reverse=True):
        if point.startswith(str(root)):
            try:
                umount(point, lazy=True)
            except OSError:
                pass


def sweep(root: Path, state: Path) -> None:
    """Whatever a test's daemon left: mounts under ``root``, processes of ``state``."""
    unmount_under(root)
    kill_all(erofsd_processes(str(state)))  # the holder, FUSE workers
