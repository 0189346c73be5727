"""erofsd images as OCI images.

The manifest's layers are the blobs in device-table order, then the
bootstrap (images of earlier releases put the bootstrap first, with media
types of their own: both are read). Every layer has an OCI layer media type
and the annotation ``containerd.io/snapshot/erofsd.layer``, so containerd
hands each one to a snapshotter instead of fetching it. Each blob descriptor
carries more annotations: the size of the data the kernel addresses, the
sha256 of the chunk table at the blob's end and, when the blob's frames are
compressed, where that table begins (an uncompressed blob is its data, so
its table begins at the data's size). The manifest digest thus pins the
bootstrap, every blob and, via the tables, every frame and every chunk.
The config is an ordinary OCI image config plus an ``erofsd`` section with
what a reader needs without opening the bootstrap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from ..erofs.blobwriter import BlobInfo
from ..erofs.builder import BuildResult, Layer, Progress, build
from ..erofs.chunktable import ChunkTable
from ..erofs.codec import Compression
from ..erofs.readat import ReadAt
from ..errors import BadReference, CorruptImage, IntegrityError
from .descriptor import Descriptor, canonical_json, check_digest, sha256_digest
from .layout import OciLayout
from .manifest import host_platform_name
from .mediatypes import (
    BLOB_CHUNK_TABLE,
    BLOB_DATA_SIZE,
    BLOB_TABLE_OFFSET,
    BLOB_TYPES,
    BOOTSTRAP_TYPES,
    DOCKER_MANIFEST,
    EROFSD_BLOB,
    EROFSD_BOOTSTRAP,
    OCI_CONFIG,
    OCI_MANIFEST,
    SNAPSHOT_LAYER,
)
from .reference import LayoutRef

FORMAT_VERSION = 1
MAX_BLOBS = 1024


MAX_DATA_SIZE = 1 << 44  # what one blob may give the kernel: 16 TiB


@dataclasses.dataclass(frozen=True)
class BlobRef:
    descriptor: Descriptor
    data_size: int  # the data the kernel addresses (uncompressed)
    table_digest: str
    table_offset: int  # where the chunk table begins in the stored blob (its end: elsewhere)
    # the blob that holds the chunk table when the stored blob does not: an index's
    # span table, beside an ordinary gzip layer (None: the stored blob's tail)
    table_blob: Descriptor | None = None
    windows_blob: Descriptor | None = None  # a span table's windows (chunktable.py)
    diff_id: str | None = None  # sha256 of the whole data, checked once it is all present

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @property
    def table_size(self) -> int:
        return self.table_blob.size if self.table_blob else self.size - self.table_offset

    @property
    def table_location(self) -> tuple[str, int]:
        """(blob digest, offset) where the chunk table can be fetched."""
        if self.table_blob:
            return self.table_blob.digest, 0
        return self.digest, self.table_offset

    @property
    def compressed(self) -> bool:
        return self.table_offset != self.data_size

    @property
    def cache_size(self) -> int:
        """The cache file: the data the kernel reads, then the chunk table."""
        return self.data_size + self.table_size


@dataclasses.dataclass(frozen=True)
class ErofsdManifest:
    digest: str
    config: Descriptor
    bootstrap: Descriptor
    blobs: tuple[BlobRef, ...]
    index_digest: str | None = None  # an ordinary image, served through this index

    @classmethod
    def parse(cls, raw: bytes, digest: str) -> ErofsdManifest:
        try:
            value = json.loads(raw)
        except ValueError as e:
            raise BadReference(f"manifest {digest} is not JSON: {e}") from None
        if not isinstance(value, dict) or value.get("schemaVersion") != 2:
            raise BadReference(f"manifest {digest} is not a schema 2 image manifest")
        media_type = value.get("mediaType", OCI_MANIFEST)
        if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
            raise BadReference(f"manifest {digest} has media type {media_type!r}")
        layers = value.get("layers")
        if not isinstance(layers, list) or not layers:
            raise BadReference(f"manifest {digest} has no layers")
        descriptors = [Descriptor.from_json(d, f"layer {i}") for i, d in enumerate(layers)]
        heads = [d for d in descriptors if d.media_type in BOOTSTRAP_TYPES]
        if len(heads) != 1:
            raise BadReference(f"{digest} is not an erofsd image: it has {len(heads)} erofsd "
                               "bootstrap layers, not one (convert an ordinary image with "
                               "`erofsd convert`)")
        rest = [d for d in descriptors if d is not heads[0]]
        if len(rest) > MAX_BLOBS:
            raise BadReference(f"manifest {digest} has {len(rest)} blobs")
        blobs = tuple(_blob_ref(d, i) for i, d in enumerate(rest))
        config = Descriptor.from_json(value.get("config"), "config")
        return cls(digest, config, heads[0], blobs)


def _blob_ref(d: Descriptor, i: int) -> BlobRef:
    if d.media_type not in BLOB_TYPES:
        raise BadReference(f"blob {i + 1} has media type {d.media_type!r}, not an erofsd blob")
    try:
        data_size = int(d.annotations[BLOB_DATA_SIZE])
        table = check_digest(d.annotations[BLOB_CHUNK_TABLE])
        table_offset = int(d.annotations.get(BLOB_TABLE_OFFSET, data_size))
    except (KeyError, ValueError):
        raise BadReference(f"blob {d.digest} lacks valid {BLOB_DATA_SIZE} and "
                           f"{BLOB_CHUNK_TABLE} annotations") from None
    if not 0 <= data_size <= MAX_DATA_SIZE or data_size % 4096 \
            or not 0 <= table_offset <= d.size:
        raise BadReference(f"blob {d.digest}: data size {data_size} and chunk table offset "
                           f"{table_offset} do not fit its size {d.size}")
    return BlobRef(d, data_size, table, table_offset)


def check_chunk_table(raw: bytes, ref: BlobRef) -> ChunkTable:
    """A blob's chunk table from its bytes, checked against the manifest (an index's table
    must be a span table: its stored blob is a gzip layer)."""
    if sha256_digest(raw) != ref.table_digest:
        raise IntegrityError(f"chunk table of blob {ref.digest} does not match its digest")
    table = ChunkTable.unpack(raw, ref.data_size, ref.table_offset)
    if (table.version == 3) != (ref.table_blob is not None):
        raise CorruptImage(f"blob {ref.digest}: a chunk table of version {table.version} "
                           f"cannot serve a {'gzip layer' if ref.table_blob else 'blob'}")
    windows = ref.windows_blob.size if ref.windows_blob else 0
    if table.window_blob_size != windows:
        raise CorruptImage(f"blob {ref.digest}: the span table's windows take "
                           f"{table.window_blob_size} bytes, its window blob is {windows}")
    return table


def load_chunk_table(blob: ReadAt, ref: BlobRef) -> ChunkTable:
    """Read a stored blob's chunk table from its tail and check it against the manifest."""
    return check_chunk_table(blob.read_at(ref.table_offset, ref.table_size), ref)


def config_bytes(result: BuildResult, bootstrap: str, *, runtime: dict[str, Any] | None = None,
                 history: list[dict] | None = None, architecture: str | None = None,
                 os_name: str = "linux") -> bytes:
    config: dict[str, Any] = {
        "architecture": architecture or host_platform_name().split("/")[1],
        "os": os_name,
        "config": runtime or {},
        # the layers are stored as they are: each diff_id is the layer's own digest
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in result.blobs] + [bootstrap]},
        "erofsd": {
            "version": FORMAT_VERSION,
            "block_size": 4096,
            "chunk_size": result.chunk_size,
            "inodes": result.inodes,
            "file_bytes": result.file_bytes,
        },
    }
    if history:
        config["history"] = history
    return canonical_json(config)


def blob_descriptor(info: BlobInfo, extra: dict[str, str] | None = None) -> Descriptor:
    annotations = {BLOB_DATA_SIZE: str(info.data_size), BLOB_CHUNK_TABLE: info.table_digest}
    if info.compressed:
        annotations[BLOB_TABLE_OFFSET] = str(info.table_offset)
    return Descriptor(EROFSD_BLOB, info.digest, info.size,
                      {**annotations, SNAPSHOT_LAYER: "blob", **(extra or {})})


def write_result(layout: OciLayout, tag: str, result: BuildResult, *,
                 blob_annotations: Sequence[dict[str, str]] | None = None,
                 config: bytes | None = None) -> Descriptor:
    """Move a build's blobs into the layout, add bootstrap, config and manifest, tag it.

    Tagging comes last, so until then the layout's index is unchanged; on
    failure the blobs this call placed (nothing referenced them) are removed.
    """
    placed: list[str] = []

    def put_file(path: str, digest: str) -> None:
        if layout.put_file(path, digest):
            placed.append(digest)

    def put_bytes(data: bytes) -> str:
        digest = sha256_digest(data)
        if not layout.has_blob(digest):
            placed.append(layout.put_bytes(data))
        return digest

    try:
        blob_descs = []
        for i, info in enumerate(result.blobs):
            if info.path:  # no path: the destination already has this blob
                put_file(info.path, info.digest)
            extra = blob_annotations[i] if blob_annotations else None
            blob_descs.append(blob_descriptor(info, extra))
        bootstrap = Descriptor(EROFSD_BOOTSTRAP, put_bytes(result.bootstrap),
                               len(result.bootstrap), {SNAPSHOT_LAYER: "bootstrap"})
        config = config or config_bytes(result, bootstrap.digest)
        config_desc = Descriptor(OCI_CONFIG, put_bytes(config), len(config))
        manifest = canonical_json({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [d.to_json() for d in blob_descs] + [bootstrap.to_json()],
        })
        descriptor = Descriptor(OCI_MANIFEST, put_bytes(manifest), len(manifest))
        layout.set_tag(tag, descriptor)
        return descriptor
    except BaseException:
        for digest in placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(layout.blob_path(digest))
        raise


def build_to_layout(layers: Sequence[Layer], ref: LayoutRef, *, chunk_size: int,
                    progress: Progress | None = None,
                    compression: Compression | None = Compression()) -> Descriptor:
    """Build and tag an image; on failure the layout is left as it was (or not created)."""
    created = not os.path.exists(ref.path)
    layout = OciLayout.create(ref.path)
    workdir = tempfile.mkdtemp(prefix=".erofsd-build-", dir=layout.temp_dir())
    try:
        result = build(layers, workdir, chunk_size=chunk_size, progress=progress,
                       compression=compression)
        return write_result(layout, ref.tag, result)
    except BaseException:
        if created:
            shutil.rmtree(ref.path, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(workdir)
