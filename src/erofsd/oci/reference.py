"""Image references: ``oci:DIR[:TAG]`` for a layout directory."""

from __future__ import annotations

import dataclasses
import re

from ..errors import BadReference

DEFAULT_TAG = "latest"
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


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
