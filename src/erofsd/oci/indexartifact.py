"""The index of an ordinary image as an OCI artifact beside it, its ``subject`` the image.

    manifest   artifactType application/vnd.erofsd.tar-index.v1, config the
               empty descriptor, subject the image's manifest,
               annotation io.erofsd.index.span-size
    layers     the bootstrap (…tar-index.bootstrap.v1), then per image layer,
               in order, its span table (…tar-index.spans.v1, annotated with
               that layer's digest, diff_id and tar size) and the table's
               window blob (…tar-index.windows.v1, annotated with the layer's
               digest)

The artifact holds no timestamp: one image indexed twice with the same
span size gives one digest. It is published where the image is (the
same repository, or the same layout) or in DST, and listed under the
referrers tag schema (referrers.py) so that a mount can find it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import NotFound
from .descriptor import Descriptor, canonical_json, sha256_digest
from .indexer import DEFAULT_SPAN, ImageIndex, index_image
from .layout import OciLayout
from .manifest import parse_object
from .mediatypes import (
    DIFF_ID,
    EMPTY,
    INDEX_ARTIFACT,
    INDEX_BOOTSTRAP,
    INDEX_SPANS,
    INDEX_WINDOWS,
    LAYER,
    OCI_INDEX,
    OCI_MANIFEST,
    SPAN_SIZE,
    TAR_SIZE,
)
from .reference import LayoutRef, RegistryRef, parse_reference
from .referrers import fallback_tag, referrer_entry, with_referrer
from .registry import RegistryClient
from .source import resolve_image
from .transport import Transport

EMPTY_BYTES = b"{}"


@dataclasses.dataclass(frozen=True)
class Artifact:
    manifest: bytes
    blobs: dict[str, bytes]  # digest -> bytes: the config, bootstrap, span tables, windows
    table_bytes: int  # of the span tables
    window_bytes: int  # of their window blobs

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(OCI_MANIFEST, sha256_digest(self.manifest), len(self.manifest))


def artifact_of(index: ImageIndex) -> Artifact:
    blobs = {sha256_digest(EMPTY_BYTES): EMPTY_BYTES}
    layers = []

    def blob(media_type: str, data: bytes, annotations: dict[str, str] | None = None) -> dict:
        digest = sha256_digest(data)
        blobs[digest] = data
        return Descriptor(media_type, digest, len(data), annotations or {}).to_json()

    layers.append(blob(INDEX_BOOTSTRAP, index.bootstrap))
    for layer in index.layers:
        layers.append(blob(INDEX_SPANS, layer.table.pack(),
                           {LAYER: layer.layer.digest, DIFF_ID: layer.diff_id,
                            TAR_SIZE: str(layer.tar_size)}))
        layers.append(blob(INDEX_WINDOWS, layer.windows, {LAYER: layer.layer.digest}))
    tables = sum(d["size"] for d in layers[1::2])
    windows = sum(d["size"] for d in layers[2::2])
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": INDEX_ARTIFACT,
        "config": Descriptor(EMPTY, sha256_digest(EMPTY_BYTES), len(EMPTY_BYTES)).to_json(),
        "layers": layers, "subject": index.subject.to_json(),
        "annotations": {SPAN_SIZE: str(index.span_size)}})
    return Artifact(manifest, blobs, tables, windows)


def publish(artifact: Artifact, subject: str, destination: LayoutRef | RegistryRef,
            transport: Transport) -> Descriptor:
    """Write the artifact and list it as a referrer of ``subject`` (a manifest digest)."""
    entry = referrer_entry(artifact.descriptor, INDEX_ARTIFACT)
    tag = fallback_tag(subject)
    if isinstance(destination, LayoutRef):
        layout = OciLayout.create(destination.path)
        for data in artifact.blobs.values():
            layout.put_bytes(data)
        layout.put_bytes(artifact.manifest)
        existing = layout.tags().get(tag)
        listed = with_referrer(layout.read_blob(existing.digest) if existing else None, entry)
        layout.set_tag(tag, Descriptor(OCI_INDEX, layout.put_bytes(listed), len(listed)))
        return artifact.descriptor
    client = RegistryClient(destination.host, transport)
    repository = destination.repository
    for digest, data in artifact.blobs.items():
        if client.blob_size(repository, digest) != len(data):
            client.upload_blob(repository, digest, len(data), lambda data=data: iter([data]))
    client.put_manifest(destination.with_reference(digest=artifact.descriptor.digest),
                        artifact.manifest, OCI_MANIFEST)
    try:
        existing, _, _ = client.get_manifest(destination.with_reference(tag=tag))
    except NotFound:
        existing = None
    client.put_manifest(destination.with_reference(tag=tag), with_referrer(existing, entry),
                        OCI_INDEX)
    return artifact.descriptor


@dataclasses.dataclass(frozen=True)
class IndexReport:
    index: Descriptor  # the artifact's manifest
    subject: Descriptor  # the image's
    destination: str
    layers: int
    image_bytes: int  # the layers as the registry holds them
    bootstrap_bytes: int
    table_bytes: int
    window_bytes: int  # fetched a window at a time, as reads need them

    @property
    def mount_bytes(self) -> int:
        """What a mount fetches of the index before any read: bootstrap and span tables."""
        return self.bootstrap_bytes + self.table_bytes

    @property
    def total_bytes(self) -> int:
        return self.mount_bytes + self.window_bytes

    def to_json(self) -> dict:
        return {"index": self.index.digest, "subject": self.subject.digest,
                "destination": self.destination, "layers": self.layers,
                "image_bytes": self.image_bytes, "bootstrap_bytes": self.bootstrap_bytes,
                "span_table_bytes": self.table_bytes, "window_bytes": self.window_bytes}


def index_reference(src: str, dst: str | None = None, *, span_size: int = DEFAULT_SPAN,
                    insecure: bool = False, platform: str | None = None,
                    progress: Callable[[int], None] | None = None,
                    on_total: Callable[[int], None] | None = None) -> IndexReport:
    """Index the image ``src`` and publish it to ``dst`` (default: where the image is)."""
    transport = Transport(insecure=insecure)
    try:
        image = resolve_image(src, transport=transport, platform=platform)
        media_type = parse_object(image.manifest, "manifest").get("mediaType") or OCI_MANIFEST
        subject = Descriptor(media_type, image.digest, len(image.manifest))
        index = index_image(image, subject, span_size=span_size, progress=progress,
                            on_total=on_total)
        artifact = artifact_of(index)
        destination = parse_reference(dst) if dst else _beside(parse_reference(src))
        published = publish(artifact, image.digest, destination, transport)
    finally:
        transport.close()
    return IndexReport(published, subject, _where(destination), len(index.layers),
                       sum(layer.layer.size for layer in index.layers), len(index.bootstrap),
                       artifact.table_bytes, artifact.window_bytes)


def _beside(ref: LayoutRef | RegistryRef) -> LayoutRef | RegistryRef:
    return LayoutRef(ref.path) if isinstance(ref, LayoutRef) else ref.with_reference()


def _where(ref: LayoutRef | RegistryRef) -> str:
    if isinstance(ref, LayoutRef):
        return f"oci:{ref.path}"
    return f"docker://{ref.host}/{ref.repository}"
