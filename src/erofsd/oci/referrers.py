"""Referrers: artifacts whose ``subject`` is an image, to be found from that image.

OCI 1.1 registries list them at ``/v2/<repo>/referrers/<digest>``; for the
others (Debian's docker-registry among them) and for layouts, the spec's
tag schema: an image index tagged ``sha256-<hex of the subject>`` lists
them. erofsd writes that index wherever it publishes an index, and reads it
back for discovery; a registry with the API also answers for itself.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadReference
from .descriptor import Descriptor, canonical_json
from .manifest import parse_object
from .mediatypes import OCI_INDEX

DISCOVER = "discover"  # what a reader says to use the index its image's referrers list


def fallback_tag(subject: str) -> str:
    algorithm, _, hex_digest = subject.partition(":")
    return f"{algorithm}-{hex_digest}"


def referrer_entry(descriptor: Descriptor, artifact_type: str,
                   annotations: dict[str, str] | None = None) -> dict[str, Any]:
    entry = {**descriptor.to_json(), "artifactType": artifact_type}
    if annotations:
        entry["annotations"] = dict(annotations)
    return entry


def with_referrer(index: bytes | None, entry: dict[str, Any]) -> bytes:
    """The tag-schema index ``index`` (None: none yet) with ``entry`` in it, once."""
    manifests = referrers_in(index) if index is not None else []
    manifests = [m for m in manifests if m.get("digest") != entry["digest"]] + [entry]
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def referrers_in(index: bytes) -> list[dict[str, Any]]:
    """The entries of a referrers list (the API's answer, or a tag-schema index)."""
    value = parse_object(index, "referrers index")
    manifests = value.get("manifests", [])
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise BadReference("referrers index: manifests is not a list of descriptors")
    for m in manifests:
        Descriptor.from_json(m, "referrer")  # a bad one is refused, not skipped
    return manifests


def of_type(manifests: list[dict[str, Any]], artifact_type: str) -> list[Descriptor]:
    return [Descriptor.from_json(m, "referrer") for m in manifests
            if m.get("artifactType") == artifact_type]
