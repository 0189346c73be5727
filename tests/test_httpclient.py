"""The HTTP client against real servers on 127.0.0.1 and a unix socket."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import socketserver
import threading

import pytest

from erofsd.httpclient import Client, ConnectFailed, Timeout, TransportError, proxy_for

BODY = bytes(range(256)) * 1024


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list  # (connection id, method, path, headers) per request, set per server

    def log_message(self, *args) -> None:
        pass

    def _record(self) -> None:
        self.server.seen.append((self.client_address, self.command, self.path,
                                 dict(self.headers)))

    def do_HEAD(self) -> None:
        self._record()
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()

    def do_GET(self) -> None:
        self._record()
        route = getattr(self, "get_" + self.path.strip("/").split("?")[0].replace("-", "_"),
                        None)
        if route is None:
            self.send_error(404)
            return
        route()

    def do_POST(self) -> None:
        self._record()
        length = int(self.headers.get("Content-Length", 0))
        self.server.bodies.append(self.rfile.read(length))
        if self.path == "/see-other":
            self._redirect(303, "/body")
        elif self.path == "/temporary":
            self._redirect(307, "/echo")
        else:
            self._send(200, b"ok")

    def _send(self, code: int, body: bytes, **headers) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, code: int, location: str) -> None:
        self._send(code, b"", Location=location)

    def get_body(self) -> None:
        self._send(200, BODY)

    def get_redirect_here(self) -> None:
        self._redirect(307, "/body")

    def get_redirect_away(self) -> None:
        self._redirect(307, self.server.elsewhere + "/body")

    def get_redirect_loop(self) -> None:
        self._redirect(302, "/redirect-loop")

    def get_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(BODY), 10000):
            piece = BODY[start:start + 10000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def get_short(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY[:1000])
        self.close_connection = True

    def get_stall(self) -> None:
        self.server.release.wait(10)
        self._send(200, b"late")

    def get_close_after(self) -> None:
        self._send(200, b"bye", Connection="close")
        self.close_connection = True

    def get_drop_after(self) -> None:  # closes the connection without saying so
        self._send(200, b"bye")
        self.close_connection = True

    def get_garbage(self) -> None:
        self.wfile.write(b"this is not HTTP\r\n\r\n")
        self.close_connection = True


@contextlib.contextmanager
def serving(server_class=http.server.ThreadingHTTPServer, address=("127.0.0.1", 0)):
    server = server_class(address, Handler)
    server.daemon_threads = True
    server.seen, server.bodies, server.release = [], [], threading.Event()
    server.elsewhere = ""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def url(server, path: str) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}{path}"


def test_a_connection_is_kept_alive_and_reused_for_the_next_request():
    with serving() as server, contextlib.closing(Client()) as client:
        for _ in range(5):
            with client.send("GET", url(server, "/body"),
                             headers={"Range": "bytes=0-9"}) as reply:
                assert reply.status_code == 200 and reply.read() == BODY
        assert len({conn for conn, *_ in server.seen}) == 1


def test_a_reply_not_read_to_the_end_does_not_leave_its_bytes_for_the_next():
    with serving() as server, contextlib.closing(Client()) as client:
        with client.send("GET", url(server, "/body")) as reply:
            assert next(reply.iter_bytes(100)) == BODY[:100]
        with client.send("GET", url(server, "/body")) as reply:
            assert reply.read() == BODY
        assert len({conn for conn, *_ in server.seen}) == 2


def test_head_and_chunked_replies():
    with serving() as server, contextlib.closing(Client()) as client:
        with client.send("HEAD", url(server, "/body")) as reply:
            assert reply.headers.get("content-length") == str(len(BODY))
        with client.send("GET", url(server, "/chunked")) as reply:
            assert reply.read() == BODY
        assert client.get(url(server, "/body")).read() == BODY
        assert len({conn for conn, *_ in server.seen}) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error():
    with serving() as server, contextlib.closing(Client()) as client:
        assert client.get(url(server, "/close-after")).read() == b"bye"
        assert client.get(url(server, "/body")).read() == BODY
        assert client.get(url(server, "/drop-after")).read() == b"bye"
        with client.send("GET", url(server, "/body")) as reply:
            assert reply.read() == BODY
        assert [path for _, _, path, _ in server.seen] == ["/close-after", "/body",
                                                           "/drop-after", "/body"]
        assert len({conn for conn, *_ in server.seen}) == 3


def test_redirects_keep_authorization_within_the_origin_and_drop_it_outside():
    with serving() as here, serving() as there, contextlib.closing(Client()) as client:
        here.elsewhere = url(there, "").rstrip("/")
        secret = {"Authorization": "Bearer secret"}
        with client.send("GET", url(here, "/redirect-here"), headers=secret) as reply:
            assert reply.read() == BODY
        assert here.seen[-1][3].get("Authorization") == "Bearer secret"
        with client.send("GET", url(here, "/redirect-away"), headers=secret) as reply:
            assert reply.read() == BODY and reply.url == url(there, "/body")
        assert "Authorization" not in there.seen[-1][3]


def test_see_other_turns_a_post_into_a_get_and_307_sends_the_body_again():
    with serving() as server, contextlib.closing(Client()) as client:
        with client.send("POST", url(server, "/see-other"), body=b"form") as reply:
            assert reply.read() == BODY
        assert server.seen[-1][1:3] == ("GET", "/body")
        with client.send("POST", url(server, "/temporary"), body=b"again") as reply:
            assert reply.read() == b"ok"
        assert server.bodies == [b"form", b"again", b"again"]  # /temporary, then /echo
        with pytest.raises(TransportError, match="streamed body"):
            client.send("POST", url(server, "/temporary"), body=iter([b"once"]),
                        headers={"Content-Length": "4"})


def test_a_redirect_loop_is_an_error():
    with serving() as server, contextlib.closing(Client()) as client:
        with pytest.raises(TransportError, match="redirects"):
            client.send("GET", url(server, "/redirect-loop"))


def test_a_streamed_upload_is_sent_as_it_comes():
    with serving() as server, contextlib.closing(Client()) as client:
        pieces = [b"a" * 70000, b"b" * 5]
        with client.send("POST", url(server, "/upload"), body=iter(pieces),
                         headers={"Content-Length": "70005"}) as reply:
            assert reply.read() == b"ok"
        assert server.bodies == [b"".join(pieces)]


def test_failures_are_translated_into_the_client_errors():
    with serving() as server, contextlib.closing(Client(read_timeout=0.5)) as client:
        with pytest.raises(Timeout):
            client.send("GET", url(server, "/stall"))
        with client.send("GET", url(server, "/short")) as reply, \
                pytest.raises(TransportError, match="IncompleteRead"):
            reply.read()
        with pytest.raises(TransportError):
            client.send("GET", url(server, "/garbage"))
        with pytest.raises(TransportError, match="not an http"):
            client.send("GET", "ftp://127.0.0.1/x")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with contextlib.closing(Client()) as client, pytest.raises(ConnectFailed):
        client.send("GET", f"http://127.0.0.1:{port}/")


def test_a_unix_socket_carries_every_request(tmp_path):
    path = str(tmp_path / "api.sock")

    class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        def get_request(self):
            request, _ = super().get_request()
            return request, ("local", 0)

    with serving(UnixServer, path) as server, \
            contextlib.closing(Client(unix_socket=path)) as client:
        assert client.get("http://anything/body").read() == BODY
        assert server.seen[-1][2] == "/body"
    os.unlink(path)
    with contextlib.closing(Client(unix_socket=path)) as client, pytest.raises(ConnectFailed):
        client.get("http://anything/body")


def test_proxies_come_from_the_environment_and_no_proxy_bypasses_them(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("https", "registry.example") is None
    monkeypatch.setenv("https_proxy", "proxy.example:3128")
    monkeypatch.setenv("no_proxy", "localhost,.internal")
    assert proxy_for("https", "registry.example") == "http://proxy.example:3128"
    assert proxy_for("http", "registry.example") is None
    assert proxy_for("https", "mirror.internal") is None
