"""Copy images between an OCI layout and a registry, without other tools.

Any OCI or Docker schema 2 image travels (erofsd images are just that);
the manifest bytes are kept as they are, so digests do not change. Blobs
the other side already has are skipped; every blob pulled is verified
against its digest before it is renamed into the layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator

from ..errors import BadReference, IntegrityError
from .descriptor import Descriptor
from .layout import OciLayout
from .manifest import parse_object
from .mediatypes import INDEXES, OCI_MANIFEST
from .reference import LayoutRef, RegistryRef
from .registry import RegistryClient
from .source import resolve_image
from .transport import Transport

PIECE = 1 << 20
Progress = Callable[[int], None]


@dataclasses.dataclass
class CopyReport:
    manifest: str
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0


def manifest_blobs(raw: bytes) -> tuple[str, list[Descriptor]]:
    """(media type, [config, layers...]) of an image manifest."""
    value = parse_object(raw, "manifest")
    media_type = value.get("mediaType") or OCI_MANIFEST
    if media_type in INDEXES or "manifests" in value:
        raise BadReference("this names an image index; copy one platform's manifest")
    blobs = [Descriptor.from_json(value.get("config"), "config")]
    blobs += [Descriptor.from_json(d, f"layer {i}") for i, d in enumerate(value.get("layers", []))]
    return media_type, blobs


def total_size(raw: bytes) -> int:
    return sum(d.size for d in manifest_blobs(raw)[1])


def _file_pieces(path: str, progress: Progress | None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            if progress:
                progress(len(piece))
            yield piece


def push(src: LayoutRef, dst: RegistryRef, transport: Transport,
         progress: Progress | None = None) -> CopyReport:
    layout = OciLayout.open(src.path)
    descriptor = layout.resolve(src.tag)
    raw = layout.read_blob(descriptor.digest, "manifest")
    media_type, blobs = manifest_blobs(raw)
    client = RegistryClient(dst.host, transport)
    report = CopyReport(descriptor.digest)
    for blob in blobs:
        if client.blob_size(dst.repository, blob.digest) == blob.size:
            report.skipped += 1
            if progress:
                progress(blob.size)
            continue
        path = str(layout.blob_path(blob.digest))
        client.upload_blob(dst.repository, blob.digest, blob.size,
                           lambda path=path: _file_pieces(path, progress))
        report.copied += 1
        report.bytes_copied += blob.size
    client.put_manifest(dst, raw, media_type)
    return report


def pull(src: RegistryRef, dst: LayoutRef, transport: Transport,
         progress: Progress | None = None, platform: str | None = None) -> CopyReport:
    image = resolve_image(str(src), transport=transport, platform=platform)
    media_type, blobs = manifest_blobs(image.manifest)
    client = image.source.client  # a registry source: resolve_image made it from src
    layout = OciLayout.create(dst.path)
    report = CopyReport(image.digest)
    for blob in blobs:
        if layout.has_blob(blob.digest):
            report.skipped += 1
            if progress:
                progress(blob.size)
            continue
        _download(client, src.repository, blob, layout, progress)
        report.copied += 1
        report.bytes_copied += blob.size
    layout.put_bytes(image.manifest)
    layout.set_tag(dst.tag, Descriptor(media_type, image.digest, len(image.manifest)))
    return report


def _download(client: RegistryClient, repository: str, blob: Descriptor, layout: OciLayout,
              progress: Progress | None) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".erofsd-tmp-", dir=layout.temp_dir())
    state = {"hash": hashlib.sha256(), "size": 0}
    try:
        with os.fdopen(fd, "wb") as out:
            def restart() -> None:
                out.seek(0)
                out.truncate()
                state["hash"], state["size"] = hashlib.sha256(), 0

            def sink(piece: bytes) -> None:
                out.write(piece)
                state["hash"].update(piece)
                state["size"] += len(piece)
                if progress:
                    progress(len(piece))

            client.stream_blob(repository, blob.digest, sink, restart)
        actual = "sha256:" + state["hash"].hexdigest()
        if actual != blob.digest or state["size"] != blob.size:
            raise IntegrityError(f"blob {blob.digest}: received {state['size']} bytes with "
                                 f"digest {actual}")
        layout.put_file(tmp, blob.digest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
