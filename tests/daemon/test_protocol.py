"""Requests checked once, at the boundary (daemon/protocol.py), into typed values."""

from __future__ import annotations

import json

import pytest

from erofsd.daemon.protocol import (
    MountRequest,
    StopRequest,
    UmountRequest,
    default_socket,
    parse_body,
)
from erofsd.errors import InvalidName, InvalidRequest


def mount_body(**fields) -> bytes:
    return json.dumps({"image": "docker://h/r:t", "mountpoint": "/mnt/a", **fields}).encode()


def test_a_good_request_round_trips():
    request = MountRequest.from_json(parse_body(mount_body(fsid="f", domain_id="d", mode="fuse",
                                                           insecure=True, mirror="http://m",
                                                           prefetch=True)))
    assert request == MountRequest("docker://h/r:t", "/mnt/a", "f", "d", "fuse", True, "http://m",
                                   True)
    assert MountRequest.from_json(request.to_json()) == request
    assert MountRequest.from_json(parse_body(mount_body())).mode == "auto"
    assert UmountRequest.from_json(UmountRequest("/mnt/a", True).to_json()).lazy is True
    assert StopRequest.from_json(parse_body(b"")) == StopRequest(False)


@pytest.mark.parametrize("body, message", [
    (mount_body(image=5), "image must be a string, not int"),
    (mount_body(mountpoint=["/mnt"]), "mountpoint must be a string, not list"),
    (mount_body(insecure="yes"), "insecure must be true or false, not str"),
    (mount_body(insecure=1), "insecure must be true or false, not int"),
    (mount_body(prefetch="all"), "prefetch must be true or false, not str"),
    (mount_body(fsid={"a": 1}), "fsid must be a string, not dict"),
    (mount_body(mode="magic"), "unknown mode 'magic'"),
    (mount_body(image=""), "image must not be empty"),
    (mount_body(mountpoint="/mnt/\u0000x"), "must not contain NUL"),
    (mount_body(colour="blue"), "unknown field"),
    (json.dumps({"mountpoint": "/mnt/a"}).encode(), "image is required"),
    (b'{"image": "\\ud800", "mountpoint": "/m"}', "image is not valid Unicode"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'["a list"]', "must be a JSON object"),
])
def test_bad_bodies_are_invalid_requests_naming_the_problem(body, message):
    with pytest.raises(InvalidRequest, match=message) as info:
        MountRequest.from_json(parse_body(body))
    assert info.value.errno == 22


def test_names_are_checked_like_the_kernel_does():
    with pytest.raises(InvalidName, match="must not contain"):
        MountRequest.from_json(parse_body(mount_body(domain_id="a,b")))


def test_other_requests_are_checked_too():
    with pytest.raises(InvalidRequest, match="lazy must be true or false"):
        UmountRequest.from_json({"mountpoint": "/m", "lazy": "no"})
    with pytest.raises(InvalidRequest, match="unknown field"):
        StopRequest.from_json({"keep": True})


def test_the_socket_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EROFSD_SOCKET", "/tmp/x.sock")
    assert default_socket() == "/tmp/x.sock"
    monkeypatch.delenv("EROFSD_SOCKET")
    assert default_socket() == "/run/erofsd/erofsd.sock"
