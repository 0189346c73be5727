"""Content descriptors and digests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from ..errors import BadReference, IntegrityError

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise BadReference(f"not a sha256 digest: {str(digest)[:80]!r}")
    return digest


def verify_bytes(data: bytes, digest: str, what: str) -> bytes:
    actual = sha256_digest(data)
    if actual != digest:
        raise IntegrityError(f"{what}: content is {actual}, expected {digest}")
    return data


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON, so the same image always has the same manifest digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclasses.dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)
    platform: dict[str, Any] | None = dataclasses.field(default=None, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out

    @classmethod
    def from_json(cls, value: Any, what: str = "descriptor") -> Descriptor:
        if not isinstance(value, dict):
            raise BadReference(f"{what} is not an object")
        size = value.get("size")
        annotations = value.get("annotations") or {}
        if not isinstance(size, int) or size < 0 or not isinstance(annotations, dict):
            raise BadReference(f"{what} has a bad size or annotations")
        return cls(media_type=str(value.get("mediaType", "")),
                   digest=check_digest(value.get("digest")), size=size,
                   annotations={str(k): str(v) for k, v in annotations.items()},
                   platform=value.get("platform"))
