"""A local OCI registry: Debian's docker-registry (CNCF distribution) on 127.0.0.1.

For the demo, the tests and the benchmarks: each instance has its own
config and storage, listens on a free loopback port, and stops by itself
(``stop``, or SIGTERM to ``python -m erofsd.localregistry DIR``).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

# combined log format: ... "GET /v2/... HTTP/1.1" 200 1234 "referer" "user agent"
ACCESS_LINE = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) ([^ "]+) HTTP/[0-9.]+" (\d+) (\d+) '
                         r'"[^"]*" "([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Served:
    """One request the registry's access log records."""

    method: str
    path: str
    status: int
    size: int  # bytes of the response body
    agent: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """One docker-registry process with its own config and storage; stops by itself."""

    def __init__(self, root: Path, *, htpasswd: tuple[str, str] | None = None,
                 auth_config: str = "", access_log: bool = False) -> None:
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        auth = auth_config
        if htpasswd:
            user, password = htpasswd
            line = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                  capture_output=True, text=True).stdout.strip()
            (root / "htpasswd").write_text(line + "\n")
            auth = (f"auth:\n  htpasswd:\n    realm: erofsd-test\n"
                    f"    path: {root / 'htpasswd'}\n")
        (root / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: error\n  accesslog:\n"
            f"    disabled: {'false' if access_log else 'true'}\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n{auth}")
        with open(root / "log", "ab") as log:  # the access log goes to stdout
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log)
        self._wait_ready()

    def _wait_ready(self, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.root / 'log').read_text()}")
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # 401 from an auth registry still means it is up
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not come up")

    def ref(self, repo: str, tag: str = "latest") -> str:
        return f"docker://{self.host}/{repo}:{tag}"

    def requests(self) -> list[Served]:
        """Every request served so far, in order (needs ``access_log``)."""
        found = []
        for line in (self.root / "log").read_text(errors="replace").splitlines():
            match = ACCESS_LINE.search(line)
            if match:
                method, path, status, size, agent = match.groups()
                found.append(Served(method, path, int(status), int(size), agent))
        return found

    def blob_gets(self, repository: str, agent: str = "") -> list[str]:
        """Digests of the blobs of ``repository`` read (GET) so far, by agents that
        start with ``agent``."""
        prefix = f"/v2/{repository}/blobs/"
        return [r.path[len(prefix):] for r in self.requests()
                if r.method == "GET" and r.path.startswith(prefix) and r.agent.startswith(agent)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def have_registry() -> bool:
    return shutil.which("docker-registry") is not None


def main() -> None:
    """Serve a registry from DIR until SIGTERM; print its host:port first."""
    import signal
    import sys
    import threading

    stopping = threading.Event()  # the handler only sets it: Popen.wait is not reentrant
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    registry = Registry(Path(sys.argv[1]))
    print(registry.host, flush=True)
    while not stopping.is_set() and registry.process.poll() is None:
        stopping.wait(0.5)
    registry.stop()


if __name__ == "__main__":
    main()
