"""Manifests and indexes as JSON: which one an index means for us."""

from __future__ import annotations

import json
import platform as host_platform
from typing import Any

from ..errors import BadReference, NotFound
from .descriptor import Descriptor
from .mediatypes import EROFSD_IMAGE_ANNOTATION, INDEXES


def parse_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise BadReference(f"{what} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadReference(f"{what} is not a JSON object")
    return value


def host_platform_name() -> str:
    machine = host_platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return f"linux/{arch}"


def _platform_of(d: Descriptor) -> str:
    p = d.platform or {}
    name = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return f"{name}/{p['variant']}" if p.get("variant") else name


def select_manifest(raw: bytes, media_type: str, platform: str | None = None
                    ) -> Descriptor | None:
    """For an index, the manifest to use; None when ``raw`` is already a manifest.

    An entry marked as an erofsd image wins; otherwise the one for
    ``platform`` (default: linux and this machine's architecture).
    """
    value = parse_object(raw, "manifest")
    kind = value.get("mediaType") or media_type
    if kind not in INDEXES and not (isinstance(value.get("manifests"), list)
                                    and "layers" not in value):
        return None
    entries = [Descriptor.from_json(m, f"index entry {i}")
               for i, m in enumerate(value.get("manifests") or [])]
    for entry in entries:
        if entry.annotations.get(EROFSD_IMAGE_ANNOTATION) == "true":
            return entry
    wanted = platform or host_platform_name()
    for entry in entries:
        name = _platform_of(entry)
        if name == wanted or name.rsplit("/", 1)[0] == wanted and wanted.count("/") == 1:
            return entry
    offered = ", ".join(_platform_of(e) for e in entries) or "nothing"
    raise NotFound(f"the image index has no manifest for {wanted} (it has: {offered})")
