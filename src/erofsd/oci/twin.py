"""One reference for every node: an index holding an ordinary image and its erofsd twin.

containerd 1.6 takes, from an index, the first manifest whose platform
matches (``images.Manifest``: a stable sort of the matches, ``limit`` 1;
OS features are not compared). So the ordinary manifests stay first and
the erofsd one follows, marked ``io.erofsd.image`` and naming the manifest
it was converted from (``io.erofsd.source-manifest``). A node without
erofsd pulls and runs the ordinary image as always. On a node with the
erofsd snapshotter, containerd's CRI plugin still picks the ordinary
manifest, but the snapshotter finds the twin from the labels of the first
layer's Prepare (``find_twin``) and mounts it instead, so no layer is
downloaded; ``erofsd containerd pull`` picks the twin at once. (nydus's
``--merge-platform`` index is the same shape; its snapshotter learned the
same detection, "index detect", in nydus-snapshotter #669.)
"""

from __future__ import annotations

import json

from ..errors import BadReference
from .descriptor import Descriptor, canonical_json
from .manifest import parse_object
from .mediatypes import EROFSD_IMAGE_ANNOTATION, INDEXES, OCI_INDEX, OCI_MANIFEST

SOURCE_MANIFEST = "io.erofsd.source-manifest"


def twin_index(top: bytes, top_media_type: str, top_digest: str, source: Descriptor,
               erofsd: Descriptor, platform: dict) -> bytes:
    """The index: what ``top`` (the ordinary image's manifest or index) offered, then the twin.

    ``source`` is the manifest that was converted, ``erofsd`` the result.
    """
    value = parse_object(top, "the ordinary image")
    if (value.get("mediaType") or top_media_type) in INDEXES or "manifests" in value:
        entries = [m for m in value.get("manifests") or []
                   if (m.get("annotations") or {}).get(EROFSD_IMAGE_ANNOTATION) != "true"]
    else:
        entries = [Descriptor(source.media_type, top_digest, len(top),
                              platform=platform).to_json()]
    twin = Descriptor(OCI_MANIFEST, erofsd.digest, erofsd.size,
                      {EROFSD_IMAGE_ANNOTATION: "true", SOURCE_MANIFEST: source.digest},
                      platform)
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                           "manifests": entries + [twin.to_json()]})


def find_twin(index: bytes, manifest_digest: str) -> Descriptor | None:
    """The erofsd twin an index offers for the ordinary manifest ``manifest_digest``."""
    try:
        value = json.loads(index)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("manifests"), list):
        return None
    for i, entry in enumerate(value["manifests"]):
        try:
            descriptor = Descriptor.from_json(entry, f"index entry {i}")
        except BadReference:
            continue
        notes = descriptor.annotations
        if notes.get(EROFSD_IMAGE_ANNOTATION) == "true" and \
                notes.get(SOURCE_MANIFEST) == manifest_digest:
            return descriptor
    return None


def fetch_top(text: str, transport) -> tuple[bytes, str, str]:
    """(bytes, media type, digest) of what a reference names: a manifest or an index."""
    from .layout import OciLayout
    from .reference import LayoutRef, parse_reference
    from .registry import RegistryClient
    ref = parse_reference(text)
    if isinstance(ref, LayoutRef):
        descriptor = OciLayout.open(ref.path).resolve(ref.tag)
        return (OciLayout.open(ref.path).read_blob(descriptor.digest, "manifest"),
                descriptor.media_type, descriptor.digest)
    return RegistryClient(ref.host, transport).get_manifest(ref)


def check_beside(src: str, dst: str) -> None:
    """A twin index names the ordinary manifest, so it must live where that one lives."""
    from .reference import LayoutRef, parse_reference
    a, b = parse_reference(src), parse_reference(dst)
    same = (isinstance(a, LayoutRef) and isinstance(b, LayoutRef)
            and a.path.rstrip("/") == b.path.rstrip("/")) or \
        (not isinstance(a, LayoutRef) and not isinstance(b, LayoutRef)
         and (a.host, a.repository) == (b.host, b.repository))
    if not same:
        raise BadReference(f"--twin writes an index beside the ordinary image: {dst} must be "
                           f"in the same repository (or layout) as {src}")
