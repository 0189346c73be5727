"""The control API: HTTP/1.1 and JSON over a Unix socket (root only, mode 0600).

    GET    /v1/status     the mounts, domains and cookies (``erofsd status --json``)
    POST   /v1/mounts     {"image", "mountpoint", "fsid"?, "domain_id"?, "mode"?,
                           "insecure"?, "mirror"?}
    DELETE /v1/mounts     {"mountpoint", "lazy"?}
    POST   /v1/stop       {"keep_mounts"?}
    GET    /metrics       the same figures for Prometheus

Errors are JSON too: {"error": message, "errno": n, "type": class}, with an
HTTP status that matches (404 not found, 409 exists or busy, 400 bad input).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import h11
import trio

from ..errors import ErofsdError
from .metrics import prometheus_text
from .service import Daemon

log = logging.getLogger("erofsd.api")
MAX_BODY = 1 << 20
STATUS_OF_ERRNO = {errno.ENOENT: 404, errno.EEXIST: 409, errno.EBUSY: 409,
                   errno.EINVAL: 400, errno.ENOTDIR: 400, errno.EOPNOTSUPP: 400,
                   errno.EACCES: 403}


class Request:
    def __init__(self, method: str, path: str, body: bytes) -> None:
        self.method, self.path, self.body = method, path, body

    def json(self) -> dict:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except ValueError as e:
            raise ErofsdError(f"request body is not JSON: {e}", errno=errno.EINVAL) from None
        if not isinstance(value, dict):
            raise ErofsdError("request body must be a JSON object", errno=errno.EINVAL)
        return value


Response = tuple[int, str, bytes]  # status, content type, body


def _json(status: int, value) -> Response:
    return status, "application/json", json.dumps(value).encode()


class Api:
    def __init__(self, daemon: Daemon, stop: Callable[[], None]) -> None:
        self.daemon = daemon
        self._stop = stop

    async def handle(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except ErofsdError as e:
            status = STATUS_OF_ERRNO.get(e.errno, 500)
            return _json(status, {"error": str(e), "errno": e.errno, "type": type(e).__name__})
        except TypeError as e:  # unknown or missing fields in a request body
            return _json(400, {"error": f"bad request: {e}", "errno": errno.EINVAL,
                               "type": "InvalidArgument"})
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
            body = request.json()
            fields = {k: body[k] for k in ("fsid", "domain_id", "mode", "insecure", "mirror")
                      if body.get(k) is not None}
            for required in ("image", "mountpoint"):
                if not isinstance(body.get(required), str):
                    raise ErofsdError(f"{required} is required", errno=errno.EINVAL)
            view = await self.daemon.mount(body["image"], body["mountpoint"], **fields)
            return _json(201, {"mount": view})
        if route == ("DELETE", "/v1/mounts"):
            body = request.json()
            if not isinstance(body.get("mountpoint"), str):
                raise ErofsdError("mountpoint is required", errno=errno.EINVAL)
            return _json(200, await self.daemon.umount(body["mountpoint"],
                                                       lazy=bool(body.get("lazy"))))
        if route == ("POST", "/v1/stop"):
            result = await self.daemon.stop(keep_mounts=bool(request.json().get("keep_mounts")))
            self._stop()
            return _json(200, result)
        return _json(404, {"error": f"no such endpoint: {request.method} {request.path}",
                           "errno": errno.ENOENT, "type": "NotFound"})


async def serve(socket_path: str, handler: Callable[[Request], Awaitable[Response]], *,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    _prepare_path(socket_path)
    old = os.umask(0o177)
    try:
        await sock.bind(socket_path)
    finally:
        os.umask(old)
    os.chmod(socket_path, 0o600)
    sock.listen(64)
    listener = trio.SocketListener(sock)
    task_status.started()
    await trio.serve_listeners(lambda stream: _connection(stream, handler), [listener])


def _prepare_path(socket_path: str) -> None:
    os.makedirs(os.path.dirname(socket_path) or ".", mode=0o755, exist_ok=True)
    if not os.path.exists(socket_path):
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(socket_path)
        raise ErofsdError(f"an erofsd daemon already listens on {socket_path}",
                          errno=errno.EADDRINUSE)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(socket_path)  # left behind by a daemon that died
    finally:
        probe.close()


async def _connection(stream: trio.SocketStream,
                      handler: Callable[[Request], Awaitable[Response]]) -> None:
    conn = h11.Connection(h11.SERVER)
    async with stream:
        try:
            request = await _read_request(stream, conn)
            if request is None:
                return
            status, content_type, body = await handler(request)
        except h11.RemoteProtocolError:
            status, content_type, body = 400, "text/plain", b"bad request\n"
        response = h11.Response(status_code=status, headers=[
            ("Content-Type", content_type), ("Content-Length", str(len(body))),
            ("Connection", "close")])
        try:
            await stream.send_all(conn.send(response) + conn.send(h11.Data(data=body))
                                  + conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, h11.LocalProtocolError):
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
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("body too large")
        elif isinstance(event, h11.EndOfMessage):
            return Request(method, target, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None
