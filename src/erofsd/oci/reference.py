"""Image references: ``oci:DIR[:TAG]`` for a layout, ``docker://HOST/REPO:TAG`` for a registry."""

from __future__ import annotations

import dataclasses
import re

from ..errors import BadReference

DEFAULT_TAG = "latest"
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
DOCKER_HUB = "registry-1.docker.io"


def check_tag(tag: str) -> str:
    if not TAG.match(tag):
        raise BadReference(f"invalid tag {tag!r}: 1..128 of [A-Za-z0-9._-], not starting "
                           "with '.' or '-'")
    return tag


@dataclasses.dataclass(frozen=True)
class LayoutRef:
    path: str
    tag: str = DEFAULT_TAG

    def __str__(self) -> str:
        return f"oci:{self.path}:{self.tag}"


def parse_layout_ref(text: str, *, default_tag: str = DEFAULT_TAG) -> LayoutRef:
    """``oci:DIR[:TAG]``; a ':' in DIR is fine as long as a tag follows it."""
    if not text.startswith("oci:"):
        raise BadReference(f"not an OCI layout reference (oci:DIR[:TAG]): {text!r}")
    rest = text[len("oci:"):]
    path, sep, tag = rest.rpartition(":")
    if not sep or "/" in tag:
        path, tag = rest, default_tag
    if not path:
        raise BadReference(f"no directory in {text!r}")
    return LayoutRef(path, check_tag(tag))


@dataclasses.dataclass(frozen=True)
class RegistryRef:
    host: str  # host[:port] as dialled
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_reference(self, tag: str | None = None, digest: str | None = None) -> RegistryRef:
        return RegistryRef(self.host, self.repository, tag, digest)

    def __str__(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"docker://{self.host}/{self.repository}{suffix}"


def parse_registry_ref(text: str) -> RegistryRef:
    """``docker://HOST[:PORT]/REPO[:TAG]`` or ``...@sha256:<hex>``.

    A first component without a '.' or ':' that is not ``localhost`` means
    Docker Hub, as docker and skopeo read it.
    """
    if not text.startswith("docker://"):
        raise BadReference(f"not a registry reference (docker://HOST/REPO:TAG): {text!r}")
    rest = text[len("docker://"):]
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST.match(digest):
            raise BadReference(f"invalid digest in {text!r}: only sha256:<64 hex> is accepted")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        host, path = first, remainder
    else:
        host, path = DOCKER_HUB, rest if "/" in rest else f"library/{rest}"
    if not HOST.match(host):
        raise BadReference(f"invalid registry host {host!r} in {text!r}")
    tag: str | None = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        check_tag(tag)
    if not path or not all(REPO_COMPONENT.match(c) for c in path.split("/")):
        raise BadReference(f"invalid repository {path!r} in {text!r} (lowercase "
                           "components of [a-z0-9._-])")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return RegistryRef(host, path, tag, digest)


def parse_reference(text: str) -> LayoutRef | RegistryRef:
    if text.startswith("oci:"):
        return parse_layout_ref(text)
    if text.startswith("docker://"):
        return parse_registry_ref(text)
    raise BadReference(f"unknown image reference {text!r}: use oci:DIR[:TAG] or "
                       "docker://HOST/REPO:TAG")
