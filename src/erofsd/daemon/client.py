"""A client of the daemon's control API (what the CLI uses), and how to start a daemon."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import time

from .. import errors
from ..errors import ErofsdError
from ..httpclient import Client, Timeout, TransportError
from .protocol import MountRequest, StopRequest, UmountRequest
from .statelock import StateLock


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
        self.timeout = timeout
        self._client = Client(unix_socket=socket_path, connect_timeout=5,
                              read_timeout=timeout, max_idle=1)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict | str:
        headers, data = {}, None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        try:
            with self._client.send(method, "http://erofsd" + path, headers=headers,
                                   body=data) as reply:
                reply.read()
        except Timeout:
            raise ErofsdError(f"the erofsd daemon on {self.socket_path} did not answer in "
                              f"{self.timeout:g} s", errno=errno.ETIMEDOUT) from None
        except TransportError as e:
            raise DaemonNotRunning(f"no erofsd daemon answers on {self.socket_path} "
                                   f"({e})") from None
        if reply.headers.get("content-type", "").startswith("text/plain"):
            if reply.status_code >= 400:
                raise ErofsdError(f"the daemon refused the request: {reply.text.strip()}")
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
        request = MountRequest(image, mountpoint, **fields)
        return self._call("POST", "/v1/mounts", request.to_json())["mount"]

    def umount(self, mountpoint: str, lazy: bool = False) -> dict:
        return self._call("DELETE", "/v1/mounts", UmountRequest(mountpoint, lazy).to_json())

    def stop(self, keep_mounts: bool = False) -> dict:
        return self._call("POST", "/v1/stop", StopRequest(keep_mounts).to_json())

    def close(self) -> None:
        self._client.close()


def _wait_for(client: DaemonClient, deadline: float, alive=lambda: True) -> bool:
    while time.monotonic() < deadline and alive():
        if client.running():
            return True
        time.sleep(0.05)
    return client.running()


def ensure_daemon(socket_path: str, state_dir: str, wait: float = 60) -> int | None:
    """Make sure a daemon answers on ``socket_path``: the pid of one started, else None.

    Never a second daemon for a state directory: when one holds its lock but
    does not answer yet (it is taking its mounts back, say), this waits for it.
    """
    client = DaemonClient(socket_path)
    try:
        if client.running():
            return None
        deadline = time.monotonic() + wait
        lock = StateLock(state_dir)
        holder = lock.holder()
        if holder is None:
            process = _spawn(socket_path, state_dir)
            if _wait_for(client, deadline, lambda: process.poll() is None):
                if client.status()["daemon"]["pid"] == process.pid:
                    return process.pid
                # another daemon started meanwhile: ours loses the lock and exits at once
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=30)
                return None
            holder = lock.holder()  # it may have lost a race to another daemon
            if holder is None:
                raise ErofsdError(f"the daemon exited at once (status {process.poll()}); see "
                                  f"{os.path.join(state_dir, 'daemon', 'daemon.log')}")
        if holder.get("socket", socket_path) != socket_path:
            raise ErofsdError(f"the erofsd daemon of {state_dir} (pid {holder.get('pid')}) "
                              f"listens on {holder['socket']}, not on {socket_path}")
        if _wait_for(client, deadline):
            return None
        raise ErofsdError(f"the erofsd daemon of {state_dir} (pid {holder.get('pid')}) does "
                          f"not answer on {socket_path}")
    finally:
        client.close()


def _spawn(socket_path: str, state_dir: str) -> subprocess.Popen:
    log_dir = os.path.join(state_dir, "daemon")
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(log_dir, "daemon.log"), "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "erofsd", "daemon", "--socket", socket_path,
             "--state-dir", state_dir],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            start_new_session=True, close_fds=True)
