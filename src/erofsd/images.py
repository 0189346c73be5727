"""Open an image named by a user, for reading.

- ``oci:DIR[:TAG]``: a local OCI layout, read in place, or through the
  cache when a state directory, domain or fsid is asked for;
- ``docker://HOST/REPO:TAG``: a registry, always through the cache, so
  only the chunks that are read are fetched;
- a raw bootstrap file plus ``--device`` files: how erofs-utils images are read.

A bootstrap is verified against its digest before anything parses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Sequence

from .cache.blob import CacheTuning
from .cache.fill import BackgroundFill
from .cache.store import BlobCache, default_state_dir
from .domain import default_fsid, validate_name, volume_of
from .erofs.chunktable import ChunkTable
from .erofs.image import Image
from .erofs.readat import BytesReadAt, FileReadAt, ReadAt
from .erofs.storedblob import DecodedBlob
from .errors import AlreadyExists, ErofsdError, IntegrityError, InvalidArgument, NotFound
from .oci.image import ErofsdManifest, load_chunk_table
from .oci.indexed import image_manifest, with_index
from .oci.layout import OciLayout
from .oci.manifest import select_manifest
from .oci.reference import parse_layout_ref
from .oci.source import ResolvedImage, resolve_image
from .oci.transport import Transport

MAX_BOOTSTRAP = 1 << 32


@dataclasses.dataclass
class ReadOptions:
    """How to reach an image: through which cache volume, over which transport."""

    state_dir: str | None = None
    domain_id: str | None = None
    fsid: str | None = None
    insecure: bool = False
    mirror: str | None = None
    platform: str | None = None
    readahead: int | None = None  # bytes fetched past a miss; None: the cache's default
    through_cache: bool = False  # read a local layout through the cache too
    index: str | None = None  # an ordinary image's index: its digest, or "discover"

    @property
    def wants_cache(self) -> bool:
        return bool(self.through_cache or self.domain_id or self.fsid or self.index)


@dataclasses.dataclass
class OpenedImage:
    name: str
    image: Image = None  # type: ignore[assignment]  # set once opening succeeds
    blobs: list[ReadAt] = dataclasses.field(default_factory=list)  # the data the kernel reads
    stored: list[ReadAt] | None = None  # a local layout's blobs as they travel
    bootstrap: ReadAt | None = None
    manifest: ErofsdManifest | None = None
    volume: str | None = None  # when read through the cache
    tables: list[ChunkTable] | None = None
    _cleanup: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def chunk_tables(self) -> list[ChunkTable] | None:
        """Each blob's verified chunk table; None for raw images, which have none."""
        if self.tables is None and self.manifest is not None and self.stored is not None:
            self.tables = [load_chunk_table(blob, ref)
                           for blob, ref in zip(self.stored, self.manifest.blobs, strict=True)]
        return self.tables

    def fill_ahead(self) -> BackgroundFill:
        """For a reader about to read everything (``with opened.fill_ahead(): ...``): the
        cache fetches the blobs whole, in order, ahead of it (nothing for local blobs)."""
        return BackgroundFill(self.blobs)

    def close(self) -> None:
        while self._cleanup:
            self._cleanup.pop()()

    def __enter__(self) -> OpenedImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_image(spec: str, devices: Sequence[str] = (),
               options: ReadOptions | None = None) -> OpenedImage:
    options = options or ReadOptions()
    if spec.startswith(("oci:", "docker://")):
        if devices:
            raise InvalidArgument("--device is for raw bootstraps; an OCI image names its blobs")
        if spec.startswith("docker://") or options.wants_cache:
            return _open_cached(spec, options)
        return _open_layout(spec)
    return _open_raw(spec, devices)


def _open_file(path: str, what: str) -> FileReadAt:
    try:
        return FileReadAt(path)
    except FileNotFoundError:
        raise NotFound(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{what} is a directory: {path} (did you mean oci:{path}?)") \
            from None
    except OSError as e:
        raise ErofsdError(f"cannot open {what} {path}: {e.strerror}", errno=e.errno) from None


def _closing_on_error(opened: OpenedImage, build: Callable[[], None]) -> OpenedImage:
    try:
        build()
    except BaseException:
        opened.close()
        raise
    return opened


def _open_raw(path: str, devices: Sequence[str]) -> OpenedImage:
    opened = OpenedImage(path)

    def build() -> None:
        files = [_open_file(path, "bootstrap")]
        opened._cleanup.append(files[0].close)
        for device in devices:
            files.append(_open_file(device, "device"))
            opened._cleanup.append(files[-1].close)
        opened.blobs = list(files[1:])
        opened.bootstrap = files[0]
        opened.image = Image(files[0], files[1:] if devices else None)

    return _closing_on_error(opened, build)


def read_verified_bootstrap(path: str, digest: str, size: int) -> bytes:
    if size > MAX_BOOTSTRAP:
        raise InvalidArgument(f"bootstrap of {size} bytes is too large")
    try:
        with open(path, "rb") as f:
            data = f.read(size + 1)
    except FileNotFoundError:
        raise NotFound(f"bootstrap {digest} is missing: {path}") from None
    if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise IntegrityError(f"bootstrap {path} does not match its digest {digest}")
    return data


def _open_layout(spec: str) -> OpenedImage:
    ref = parse_layout_ref(spec)
    layout = OciLayout.open(ref.path)
    descriptor = layout.resolve(ref.tag)
    raw = layout.read_blob(descriptor.digest, "manifest")
    chosen = select_manifest(raw, descriptor.media_type)  # an index: its erofsd entry
    if chosen is not None:
        descriptor, raw = chosen, layout.read_blob(chosen.digest, "manifest")
    manifest = ErofsdManifest.parse(raw, descriptor.digest)
    bootstrap = read_verified_bootstrap(str(layout.blob_path(manifest.bootstrap.digest)),
                                        manifest.bootstrap.digest, manifest.bootstrap.size)
    opened = OpenedImage(str(ref), manifest=manifest, stored=[])

    def build() -> None:
        for blob in manifest.blobs:
            f = _open_file(str(layout.blob_path(blob.digest)), f"blob {blob.digest}")
            opened._cleanup.append(f.close)
            opened.stored.append(f)
            if f.size != blob.size:
                raise IntegrityError(f"blob {blob.digest} is {f.size} bytes, manifest says "
                                     f"{blob.size}")
        for f, ref, table in zip(opened.stored, manifest.blobs, opened.chunk_tables(),
                                 strict=True):
            opened.blobs.append(DecodedBlob(f, table) if ref.compressed else f)
        opened.bootstrap = BytesReadAt(bootstrap)
        opened.image = Image(opened.bootstrap, opened.blobs)

    return _closing_on_error(opened, build)


def _open_cached(spec: str, options: ReadOptions) -> OpenedImage:
    """Bootstrap and blobs through the cache volume the options name."""
    transport = Transport(insecure=options.insecure)
    try:
        resolved = resolve_image(spec, transport=transport, mirror=options.mirror,
                                 platform=options.platform)
        if options.index:
            resolved = with_index(resolved, options.index)
        manifest = image_manifest(resolved)
        fsid = validate_name(options.fsid or default_fsid(manifest.bootstrap.digest), "fsid")
        if options.domain_id is not None:
            validate_name(options.domain_id, "domain_id")
        tuning = CacheTuning()
        if options.readahead is not None:
            tuning.readahead = options.readahead
        cache = BlobCache(options.state_dir or default_state_dir(), tuning)
        opened = open_resolved(resolved, cache, volume_of(options.domain_id, fsid))
    except BaseException:
        transport.close()
        raise
    opened._cleanup.insert(0, transport.close)  # closed last
    return opened


def cached_bootstrap(cache: BlobCache, resolved: ResolvedImage,
                     manifest: ErofsdManifest) -> tuple[str, int]:
    """(path, fd holding a shared lock) of the image's verified bootstrap, fetched if missing."""
    boot = manifest.bootstrap
    return cache.bootstrap(boot.digest, boot.size,
                           lambda: resolved.read_blob(boot.digest, boot.size, "bootstrap"))


def open_resolved(resolved: ResolvedImage, cache: BlobCache, volume: str) -> OpenedImage:
    """An image already resolved (its manifest pinned), read through ``volume`` of the cache.

    A FUSE worker opens the daemon's pinned image this way, and every cached
    read the image a user names; the daemon itself keeps the bootstrap
    through ``cached_bootstrap`` and opens the same blobs through the
    registry, so worker and daemon serve exactly the manifest resolved once.
    """
    manifest = image_manifest(resolved)
    opened = OpenedImage(resolved.reference, manifest=manifest, volume=volume)

    def build() -> None:
        path, fd = cached_bootstrap(cache, resolved, manifest)
        opened._cleanup.append(lambda: os.close(fd))
        bootstrap = _open_file(path, "bootstrap")
        opened._cleanup.append(bootstrap.close)
        for ref in manifest.blobs:
            blob = cache.acquire(volume, ref, [resolved.source])
            opened._cleanup.append(lambda blob=blob: cache.release(blob))
            opened.blobs.append(blob)
        opened.tables = [b.table for b in opened.blobs]  # verified when the cookie opened
        opened.bootstrap = bootstrap
        opened.image = Image(bootstrap, opened.blobs)

    return _closing_on_error(opened, build)


def export_kernel_files(opened: OpenedImage, dest: str,
                        progress: Callable[[int], None] | None = None) -> tuple[str, list[str]]:
    """Write the bootstrap and each blob's data (uncompressed, every digest checked) into
    ``dest``, new or empty: what ``mount -t erofs -o device=...`` and fsck.erofs take
    without the daemon. Returns their paths; a blob's file is named by its device tag."""
    tables = opened.chunk_tables()
    if opened.bootstrap is None or tables is None or opened.manifest is None:
        raise InvalidArgument(f"{opened.name} is not an erofsd image: its files are already "
                              "what the kernel mounts")
    os.makedirs(dest, exist_ok=True)
    if os.listdir(dest):
        raise AlreadyExists(f"{dest} is not empty")
    bootstrap = os.path.join(dest, "bootstrap")
    with open(bootstrap, "wb") as f:
        f.write(opened.bootstrap.read_at(0, opened.bootstrap.size))
    devices = []
    for i, (ref, table) in enumerate(zip(opened.manifest.blobs, tables, strict=True)):
        path = os.path.join(dest, ref.digest.split(":", 1)[1])
        with open(path, "wb") as f:
            for index, frame in enumerate(table.frames):
                if opened.stored is not None:
                    stored = opened.stored[i].read_at(frame.stored_offset, frame.stored_length)
                    data = table.open_frame(index, stored)
                else:  # through the cache, which verifies what it fetches
                    data = opened.blobs[i].read_at(frame.offset, frame.length)
                f.write(data)
                if progress:
                    progress(len(data))
        devices.append(path)
    return bootstrap, devices
