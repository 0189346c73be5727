"""The control API: HTTP/1.1 and JSON over a Unix socket (root only, mode 0600).

The routes and request bodies are in ``protocol.py``. A request is bounded
in size (``MAX_BODY``, refused with 413 as soon as its Content-Length says
more) and in time (``REQUEST_TIMEOUT`` to send it whole, else 408), so a
client that announces much and sends nothing cannot keep a connection.
While the daemon is still taking its mounts back, status answers at once
and every other request waits until it is ready.
"""

from __future__ import annotations

import errno
import http
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import h11
import trio

from ..errors import ErofsdError
from .metrics import prometheus_text
from .protocol import (
    MAX_BODY,
    STATUS_OF_ERRNO,
    MountRequest,
    StopRequest,
    UmountRequest,
    check_socket_path,
    parse_body,
)
from .service import Daemon

log = logging.getLogger("erofsd.api")
REQUEST_TIMEOUT = 30.0  # seconds to send a whole request; answering may take longer


class Request:
    def __init__(self, method: str, path: str, body: bytes) -> None:
        self.method, self.path, self.body = method, path, body


Response = tuple[int, str, bytes]  # status, content type, body


def _json(status: int, value) -> Response:
    return status, "application/json", json.dumps(value).encode()


def error_response(error: ErofsdError) -> Response:
    return _json(STATUS_OF_ERRNO.get(error.errno, 500),
                 {"error": str(error), "errno": error.errno, "type": type(error).__name__})


class Api:
    def __init__(self, daemon: Daemon, stop: Callable[[], None]) -> None:
        self.daemon = daemon
        self._stop = stop

    async def handle(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except ErofsdError as e:
            return error_response(e)
        except OSError as e:
            code = e.errno or errno.EIO
            where = f"{e.filename}: " if e.filename else ""
            log.warning("request %s %s failed: %s%s", request.method, request.path, where, e)
            return _json(STATUS_OF_ERRNO.get(code, 500),
                         {"error": where + (e.strerror or str(e)), "errno": code,
                          "type": "ErofsdError"})
        except Exception as e:  # a bug: the daemon says so and keeps serving
            log.exception("request %s %s failed", request.method, request.path)
            return _json(500, {"error": f"internal error: {type(e).__name__}: {e}",
                               "errno": errno.EIO, "type": "ErofsdError"})

    async def _route(self, request: Request) -> Response:
        route = (request.method, request.path.split("?", 1)[0])
        if route == ("GET", "/v1/status"):
            return _json(200, self.daemon.status())
        if route == ("GET", "/metrics"):
            return 200, "text/plain; version=0.0.4", prometheus_text(self.daemon.status()).encode()
        if route == ("POST", "/v1/mounts"):
            mount = MountRequest.from_json(parse_body(request.body))
            await self.daemon.ready.wait()
            return _json(201, {"mount": await self.daemon.mount(mount)})
        if route == ("DELETE", "/v1/mounts"):
            umount = UmountRequest.from_json(parse_body(request.body))
            await self.daemon.ready.wait()
            return _json(200, await self.daemon.umount(umount.mountpoint, lazy=umount.lazy))
        if route == ("POST", "/v1/stop"):
            stop = StopRequest.from_json(parse_body(request.body))
            await self.daemon.ready.wait()
            result = await self.daemon.stop(keep_mounts=stop.keep_mounts)
            self._stop()
            return _json(200, result)
        return _json(404, {"error": f"no such endpoint: {request.method} {request.path}",
                           "errno": errno.ENOENT, "type": "NotFound"})


# -- the server ---------------------------------------------------------------------------


def _bind(socket_path: str) -> trio.socket.SocketType:
    check_socket_path(socket_path)
    os.makedirs(os.path.dirname(socket_path) or ".", mode=0o755, exist_ok=True)
    if os.path.lexists(socket_path):
        os.unlink(socket_path)  # a stale socket, as check_socket_path found
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(socket_path)
    finally:
        os.umask(old)
    os.chmod(socket_path, 0o600)
    sock.listen(64)
    return trio.socket.from_stdlib_socket(sock)


async def serve(socket_path: str, handler: Callable[[Request], Awaitable[Response]], *,
                request_timeout: float = REQUEST_TIMEOUT,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen on ``socket_path`` (bound before ``task_status.started``) and answer."""
    listener = trio.SocketListener(_bind(socket_path))
    task_status.started()
    await trio.serve_listeners(lambda stream: _connection(stream, handler, request_timeout),
                               [listener])


class _TooLarge(Exception):
    pass


def _response_bytes(status: int, content_type: str, body: bytes) -> bytes:
    head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


async def _connection(stream: trio.SocketStream,
                      handler: Callable[[Request], Awaitable[Response]],
                      request_timeout: float) -> None:
    conn = h11.Connection(h11.SERVER)
    async with stream:
        try:
            with trio.move_on_after(request_timeout) as reading:
                request = await _read_request(stream, conn)
            if reading.cancelled_caught:
                response = 408, "text/plain", b"the request was not sent in time\n"
            elif request is None:
                return
            else:
                response = await handler(request)
        except _TooLarge:
            response = 413, "text/plain", f"a request body is at most {MAX_BODY} bytes\n".encode()
        except h11.RemoteProtocolError:
            response = 400, "text/plain", b"bad request\n"
        try:
            await stream.send_all(_response_bytes(*response))
        except trio.BrokenResourceError:
            pass


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> Request | None:
    method = target = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE:
                return None
            continue
        if isinstance(event, h11.Request):
            method, target = event.method.decode(), event.target.decode()
            for name, value in event.headers:
                if name == b"content-length" and int(value) > MAX_BODY:
                    raise _TooLarge()
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _TooLarge()
        elif isinstance(event, h11.EndOfMessage):
            return Request(method, target, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None
