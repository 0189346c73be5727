"""What the daemon, its client and the CLI agree on: where to talk, and what to say.

    GET    /v1/status     the mounts, domains and cookies (``erofsd status --json``)
    POST   /v1/mounts     MountRequest: {"image", "mountpoint", "fsid"?, "domain_id"?,
                          "mode"?, "insecure"?, "mirror"?, "prefetch"?, "index"?}
    DELETE /v1/mounts     UmountRequest: {"mountpoint", "lazy"?}
    POST   /v1/stop       StopRequest: {"keep_mounts"?}
    GET    /metrics       the same figures for Prometheus

A request body is checked once, here, into a typed request: a wrong type,
an unknown field, a string with a NUL or one that is not valid Unicode, or
a body nested past reason is an ``InvalidRequest`` (HTTP 400) that names
the field. Errors come back as JSON: {"error": message, "errno": n,
"type": class}, with an HTTP status that matches.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import stat
from typing import Any

from ..domain import validate_name
from ..errors import ErofsdError, InvalidRequest
from ..oci.descriptor import check_digest
from ..oci.referrers import DISCOVER

DEFAULT_SOCKET = "/run/erofsd/erofsd.sock"
MODES = ("auto", "fanotify", "fscache", "fuse")  # auto: the first that works here
MAX_BODY = 1 << 20
STATUS_OF_ERRNO = {errno.ENOENT: 404, errno.EEXIST: 409, errno.EBUSY: 409,
                   errno.EINVAL: 400, errno.ENOTDIR: 400, errno.EOPNOTSUPP: 400,
                   errno.EACCES: 403}


def default_socket() -> str:
    return os.environ.get("EROFSD_SOCKET") or DEFAULT_SOCKET


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object (empty: no fields)."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    except ValueError as e:  # UnicodeDecodeError included
        raise InvalidRequest(f"request body is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    return value


def _text(body: dict, name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidRequest(f"{name} must not be empty")
    if "\0" in value:
        raise InvalidRequest(f"{name} must not contain NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{name} is not valid Unicode (a lone surrogate?)") from None
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false, not {type(value).__name__}")
    return value


def _only(body: dict, cls: type) -> None:
    unknown = sorted(set(body) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(map(repr, unknown))}")


@dataclasses.dataclass(frozen=True)
class MountRequest:
    image: str
    mountpoint: str
    fsid: str | None = None
    domain_id: str | None = None
    mode: str = "auto"
    insecure: bool = False
    mirror: str | None = None
    prefetch: bool = False  # fetch the whole image in the background once mounted
    index: str | None = None  # an ordinary image's index: a digest, or "discover"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> MountRequest:
        _only(body, cls)
        mode = _text(body, "mode") or "auto"
        if mode not in MODES:
            raise InvalidRequest(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        request = cls(image=_text(body, "image", required=True),
                      mountpoint=_text(body, "mountpoint", required=True),
                      fsid=_text(body, "fsid"), domain_id=_text(body, "domain_id"),
                      mode=mode, insecure=_flag(body, "insecure"), mirror=_text(body, "mirror"),
                      prefetch=_flag(body, "prefetch"), index=_text(body, "index"))
        if request.fsid is not None:
            validate_name(request.fsid, "fsid")
        if request.domain_id is not None:
            validate_name(request.domain_id, "domain_id")
        if request.index not in (None, DISCOVER):
            try:
                check_digest(request.index)
            except ErofsdError:
                raise InvalidRequest(f"index must be a sha256 digest or {DISCOVER!r}") from None
        return request

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, False)}


@dataclasses.dataclass(frozen=True)
class UmountRequest:
    mountpoint: str
    lazy: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> UmountRequest:
        _only(body, cls)
        return cls(_text(body, "mountpoint", required=True), _flag(body, "lazy"))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StopRequest:
    keep_mounts: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StopRequest:
        _only(body, cls)
        return cls(_flag(body, "keep_mounts"))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_socket_path(socket_path: str) -> None:
    """Refuse a path that holds anything but a dead daemon's socket (which may go)."""
    try:
        st = os.lstat(socket_path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ErofsdError(f"{socket_path} exists and is not a socket: not replacing it",
                          errno=errno.EEXIST)
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(socket_path)
        raise ErofsdError(f"an erofsd daemon already listens on {socket_path}",
                          errno=errno.EADDRINUSE)
    except ConnectionRefusedError:
        pass  # nobody listens: left behind by a daemon that died
    finally:
        probe.close()
