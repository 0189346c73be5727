"""An HTTP proxy on 127.0.0.1 that breaks blob replies on purpose.

It forwards every request to a real registry. Blob GETs get a fault drawn
from a seeded random plan: a 5xx reply, a reset connection, a stall, a
short body, a flipped bit, or a Content-Range that names other bytes.
``after_manifest`` is called once each manifest GET has been answered: a
test can move a tag right behind a client's back.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("http500", "reset", "stall", "short", "flip", "range")


class FaultProxy:
    def __init__(self, upstream: str, *, seed: int = 1, rate: float = 0.3,
                 stall_seconds: float = 1.0, weights: dict[str, float] | None = None,
                 delay: float = 0.0) -> None:
        self.upstream = upstream
        self.delay = delay  # added to every blob GET: a slow registry, not a fault
        self.rng = random.Random(seed)
        self.rate = rate
        self.stall_seconds = stall_seconds
        self.weights = weights or {"http500": 3, "reset": 3, "stall": 0.3, "short": 3,
                                   "flip": 3, "range": 2}
        self.injected: Counter = Counter()
        self.enabled = True
        self.after_manifest: Callable[[str], None] | None = None  # called with the path
        self._lock = threading.Lock()
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()  # small header and body writes must not wait on Nagle
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def handle(self):
                try:
                    super().handle()
                except (ConnectionError, OSError):
                    pass  # the client gave up on a faulty reply: expected here

            def do_GET(self):
                proxy._forward(self)

            def do_HEAD(self):
                proxy._forward(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def route(self, ref: str) -> str:
        """The same docker:// reference, through this proxy."""
        host = ref.split("/")[2]
        return ref.replace(host, self.host, 1)

    def _choose(self, request: BaseHTTPRequestHandler) -> str | None:
        if not self.enabled or request.command != "GET" or "/blobs/sha256:" not in request.path:
            return None
        with self._lock:
            if self.rng.random() >= self.rate:
                return None
            names = list(self.weights)
            fault = self.rng.choices(names, [self.weights[n] for n in names])[0]
            self.injected[fault] += 1
            return fault

    def _upstream_request(self, method: str, path: str, headers: dict):
        """One request to the registry over this thread's kept-alive connection."""
        for attempt in range(2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.upstream, timeout=30)
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._local.conn = conn
            try:
                conn.request(method, path, headers=headers)
                reply = conn.getresponse()
                return reply, reply.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _forward(self, request: BaseHTTPRequestHandler) -> None:
        fault = self._choose(request)
        if self.delay and request.command == "GET" and "/blobs/sha256:" in request.path:
            time.sleep(self.delay)
        if fault == "reset":
            request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          b"\x01\x00\x00\x00\x00\x00\x00\x00")
            request.close_connection = True
            request.connection.close()
            return
        if fault == "stall":
            time.sleep(self.stall_seconds)
            request.close_connection = True
            return
        if fault == "http500":
            request.send_response(503)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        reply, body = self._upstream_request(request.command, request.path, headers)
        out_headers = [(k, v) for k, v in reply.getheaders()
                       if k.lower() not in ("transfer-encoding", "connection")]
        if fault == "flip" and body:
            with self._lock:
                at = self.rng.randrange(len(body))
                bit = 1 << self.rng.randrange(8)
            body = body[:at] + bytes([body[at] ^ bit]) + body[at + 1:]
        if fault == "range":
            out_headers = [(k, _shift_range(v) if k.lower() == "content-range" else v)
                           for k, v in out_headers]
        request.send_response(reply.status)
        for k, v in out_headers:
            request.send_header(k, v)
        request.end_headers()
        if request.command == "HEAD":
            return
        if fault == "short":
            request.wfile.write(body[:len(body) // 2])
            request.wfile.flush()
            request.close_connection = True
            request.connection.shutdown(socket.SHUT_RDWR)
            return
        request.wfile.write(body)
        request.wfile.flush()
        if self.after_manifest and "/manifests/" in request.path and request.command == "GET":
            self.after_manifest(request.path)


def _shift_range(value: str) -> str:
    unit, _, rest = value.partition(" ")
    span, _, total = rest.partition("/")
    first, _, last = span.partition("-")
    try:
        return f"{unit} {int(first) + 4096}-{int(last) + 4096}/{total}"
    except ValueError:
        return value
