"""An ordinary (not erofsd) image's layers, its config and its diff_ids, checked once."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import BadReference
from .copy import manifest_blobs
from .descriptor import Descriptor
from .manifest import parse_object
from .mediatypes import BLOB_TYPES, BOOTSTRAP_TYPES
from .source import ResolvedImage


@dataclasses.dataclass(frozen=True)
class OrdinaryImage:
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]  # empty when the config has none (Docker schema 1 leftovers)


def read_ordinary(image: ResolvedImage, name: str) -> OrdinaryImage:
    """The layers and config of ``image`` (called ``name`` in errors): BadReference for an
    erofsd image, an image without layers, or diff_ids that do not match the layers."""
    _, blobs = manifest_blobs(image.manifest)
    config_desc, layers = blobs[0], blobs[1:]
    if any(d.media_type in BOOTSTRAP_TYPES + BLOB_TYPES for d in layers):
        raise BadReference(f"{name} is already an erofsd image")
    if not layers:
        raise BadReference(f"{name} has no layers")
    config = parse_object(image.read_blob(config_desc.digest, config_desc.size, "config"),
                          "image config")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if diff_ids and len(diff_ids) != len(layers):
        raise BadReference(f"{name}: {len(layers)} layers but {len(diff_ids)} diff_ids")
    return OrdinaryImage(config, tuple(layers), tuple(map(str, diff_ids)))
