"""The control API (daemon/api.py): bounded requests, routing, and errors with the right status.

The server runs in this process on a socket of its own; routing is checked
against a stand-in for the daemon that records what it was asked. Bad
bodies through a real daemon are in test_service_faults.py.
"""

from __future__ import annotations

import functools
import json

import trio
import trio.testing

from daemonutil import exchange
from erofsd.daemon.api import Api, Request, serve
from erofsd.daemon.protocol import MAX_BODY, MountRequest


def with_server(tmp_path, handler, client, request_timeout: float = 30.0):
    """Run ``serve`` with ``handler`` while ``client(path)`` runs in a thread; its result."""
    path = str(tmp_path / "api.sock")

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve, path, handler,
                                                  request_timeout=request_timeout))
            result = await trio.to_thread.run_sync(client, path)
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)


def recording_handler(seen: list):
    async def handler(request: Request):
        seen.append((request.method, request.path, request.body))
        return 200, "application/json", b'{"ok": true}'
    return handler


def test_a_request_reaches_the_handler_whole(tmp_path):
    seen: list = []
    body = json.dumps({"image": "x" * 70_000}).encode()  # more than one read
    status, headers, reply, _ = with_server(tmp_path, recording_handler(seen), lambda p: exchange(
        p, b"POST /v1/mounts HTTP/1.1\r\nHost: e\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body))
    assert (status, reply) == (200, b'{"ok": true}') and headers["Connection"] == "close"
    assert seen == [("POST", "/v1/mounts", body)]


def test_a_huge_content_length_is_refused_before_any_body(tmp_path):
    seen: list = []
    status, _, reply, _ = with_server(tmp_path, recording_handler(seen), lambda p: exchange(
        p, b"POST /v1/mounts HTTP/1.1\r\nHost: e\r\nContent-Length: 99999999999\r\n\r\n"))
    assert status == 413 and str(MAX_BODY).encode() in reply
    assert seen == []


def test_a_request_that_stalls_is_cut_off(tmp_path):
    seen: list = []

    def stall(path):  # announces 100 bytes, sends 10, then nothing
        return exchange(path, b"POST /v1/mounts HTTP/1.1\r\nHost: e\r\nContent-Length: 100\r\n"
                              b"\r\n0123456789")

    status, _, _, seconds = with_server(tmp_path, recording_handler(seen), stall,
                                        request_timeout=0.5)
    assert status == 408 and seconds < 10 and seen == []
    status, _, _, _ = with_server(tmp_path, recording_handler(seen),
                                  lambda p: exchange(p, b"GET /v1/sta"), request_timeout=0.5)
    assert status == 408 and seen == []  # half a request line is no better


def test_garbage_is_a_bad_request(tmp_path):
    seen: list = []
    status, _, _, _ = with_server(tmp_path, recording_handler(seen),
                                  lambda p: exchange(p, b"\x16\x03\x01 not http\r\n\r\n"))
    assert status == 400 and seen == []


class StandIn:
    """Records what the API asks of the daemon; ``mount`` fails like a bug when told to."""

    def __init__(self, ready: bool = True, bug: bool = False) -> None:
        self.calls: list = []
        self.ready = trio.Event()
        if ready:
            self.ready.set()
        self.bug = bug

    def status(self) -> dict:
        self.calls.append("status")
        return {"mounts": [], "domains": [], "cookies": [], "daemon": {}}

    async def mount(self, request: MountRequest) -> dict:
        self.calls.append(request)
        if self.bug:
            raise TypeError("a bug, not a bad request")
        return {"name": "f"}

    async def umount(self, mountpoint: str, *, lazy: bool) -> dict:
        self.calls.append(("umount", mountpoint, lazy))
        return {"mountpoint": mountpoint}


def call(api: Api, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
    status, _, raw = trio.run(api.handle, Request(method, path, body))
    return status, json.loads(raw) if raw.startswith(b"{") else raw.decode()


def test_routes_take_typed_requests():
    daemon = StandIn()
    api = Api(daemon, stop=lambda: None)
    assert call(api, "GET", "/v1/status")[0] == 200
    status, body = call(api, "POST", "/v1/mounts", b'{"image": "oci:/x", "mountpoint": "/m"}')
    assert (status, body) == (201, {"mount": {"name": "f"}})
    assert daemon.calls[-1] == MountRequest("oci:/x", "/m")
    assert call(api, "DELETE", "/v1/mounts", b'{"mountpoint": "/m", "lazy": true}')[0] == 200
    assert daemon.calls[-1] == ("umount", "/m", True)
    status, body = call(api, "GET", "/v2/anything")
    assert status == 404 and body["type"] == "NotFound"


def test_a_bad_body_is_400_and_never_reaches_the_daemon():
    daemon = StandIn()
    status, body = call(Api(daemon, stop=lambda: None), "POST", "/v1/mounts",
                        b'{"image": 1, "mountpoint": "/m"}')
    assert status == 400 and body["type"] == "InvalidRequest" and body["errno"] == 22
    assert "image must be a string" in body["error"] and daemon.calls == []


def test_a_bug_is_a_500_never_a_400():
    status, body = call(Api(StandIn(bug=True), stop=lambda: None), "POST", "/v1/mounts",
                        b'{"image": "oci:/x", "mountpoint": "/m"}')
    assert status == 500 and "internal error: TypeError" in body["error"]


def test_status_answers_while_the_daemon_starts_and_mounts_wait_for_it():
    daemon = StandIn(ready=False)
    api = Api(daemon, stop=lambda: None)
    order: list = []

    async def main():
        async with trio.open_nursery() as nursery:
            async def mount():
                await api.handle(Request("POST", "/v1/mounts",
                                         b'{"image": "oci:/x", "mountpoint": "/m"}'))
                order.append("mounted")
            nursery.start_soon(mount)
            await trio.testing.wait_all_tasks_blocked()  # the mount request waits on ready
            await api.handle(Request("GET", "/v1/status", b""))
            order.append("status")
            daemon.ready.set()

    trio.run(main)
    assert order == ["status", "mounted"]
