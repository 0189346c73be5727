"""A client of the daemon's control API (what the CLI uses)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import httpx

from .. import errors
from ..errors import ErofsdError


class DaemonNotRunning(ErofsdError):
    errno = errno.ECONNREFUSED


def error_from(body: dict) -> ErofsdError:
    """The daemon's error, as the same class of the erofsd tree."""
    cls = getattr(errors, str(body.get("type")), ErofsdError)
    if not (isinstance(cls, type) and issubclass(cls, ErofsdError)):
        cls = ErofsdError
    return cls(str(body.get("error", "the daemon failed")),
               errno=int(body.get("errno") or errno.EIO))


class DaemonClient:
    def __init__(self, socket_path: str, timeout: float = 900) -> None:
        self.socket_path = socket_path
        self._client = httpx.Client(transport=httpx.HTTPTransport(uds=socket_path),
                                    base_url="http://erofsd",
                                    timeout=httpx.Timeout(timeout, connect=5))

    def _call(self, method: str, path: str, body: dict | None = None) -> dict | str:
        try:
            reply = self._client.request(method, path, json=body)
        except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError) as e:
            raise DaemonNotRunning(f"no erofsd daemon answers on {self.socket_path} "
                                   f"({type(e).__name__}: {e})") from None
        if reply.headers.get("content-type", "").startswith("text/plain"):
            return reply.text
        payload = reply.json()
        if reply.status_code >= 400:
            raise error_from(payload)
        return payload

    def running(self) -> bool:
        try:
            self.status()
            return True
        except DaemonNotRunning:
            return False

    def status(self) -> dict:
        return self._call("GET", "/v1/status")

    def metrics(self) -> str:
        return self._call("GET", "/metrics")

    def mount(self, image: str, mountpoint: str, **fields) -> dict:
        body = {"image": image, "mountpoint": mountpoint, **fields}
        return self._call("POST", "/v1/mounts", body)["mount"]

    def umount(self, mountpoint: str, lazy: bool = False) -> dict:
        return self._call("DELETE", "/v1/mounts", {"mountpoint": mountpoint, "lazy": lazy})

    def stop(self, keep_mounts: bool = False) -> dict:
        return self._call("POST", "/v1/stop", {"keep_mounts": keep_mounts})

    def close(self) -> None:
        self._client.close()


def start_daemon(socket_path: str, state_dir: str, wait: float = 30) -> int:
    """Start `erofsd daemon` in the background; returns its pid once it answers."""
    log_dir = os.path.join(state_dir, "daemon")
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    log_path = os.path.join(log_dir, "daemon.log")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "erofsd", "daemon", "--socket", socket_path,
             "--state-dir", state_dir],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            start_new_session=True, close_fds=True)
    client = DaemonClient(socket_path)
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ErofsdError(f"the daemon exited at once (status {process.returncode}); "
                                  f"see {log_path}")
            if client.running():
                return process.pid
            time.sleep(0.05)
    finally:
        client.close()
    raise ErofsdError(f"the daemon did not answer within {wait:.0f}s; see {log_path}")
