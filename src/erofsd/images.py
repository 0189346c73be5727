"""Open an image named by a user: ``oci:DIR[:TAG]``, or a raw bootstrap plus devices.

The raw form is how images from erofs-utils are read. An OCI image's
bootstrap is verified against its digest before anything parses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Sequence

from .erofs.chunktable import ChunkTable
from .erofs.image import Image
from .erofs.readat import BytesReadAt, FileReadAt, ReadAt
from .errors import ErofsdError, IntegrityError, InvalidArgument, NotFound
from .oci.image import ErofsdManifest, load_chunk_table
from .oci.layout import OciLayout
from .oci.reference import parse_layout_ref

MAX_BOOTSTRAP = 1 << 32


@dataclasses.dataclass
class OpenedImage:
    name: str
    image: Image
    blobs: list[ReadAt]
    manifest: ErofsdManifest | None = None
    _files: list[FileReadAt] = dataclasses.field(default_factory=list)

    def chunk_tables(self) -> list[ChunkTable] | None:
        """Each blob's verified chunk table; None for raw images, which have none."""
        if self.manifest is None:
            return None
        return [load_chunk_table(blob, ref) for blob, ref in zip(self.blobs, self.manifest.blobs)]

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> OpenedImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_image(spec: str, devices: Sequence[str] = ()) -> OpenedImage:
    if spec.startswith("oci:"):
        if devices:
            raise InvalidArgument("--device is for raw bootstraps; an OCI image names its blobs")
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


def _open_raw(path: str, devices: Sequence[str]) -> OpenedImage:
    files = [_open_file(path, "bootstrap")]
    try:
        files += [_open_file(d, "device") for d in devices]
        image = Image(files[0], files[1:] if devices else None)
    except BaseException:
        for f in files:
            f.close()
        raise
    return OpenedImage(path, image, list(files[1:]), None, files)


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
    manifest = ErofsdManifest.parse(layout.read_blob(descriptor.digest, "manifest"),
                                    descriptor.digest)
    bootstrap = read_verified_bootstrap(str(layout.blob_path(manifest.bootstrap.digest)),
                                        manifest.bootstrap.digest, manifest.bootstrap.size)
    files: list[FileReadAt] = []
    try:
        for blob in manifest.blobs:
            f = _open_file(str(layout.blob_path(blob.digest)), f"blob {blob.digest}")
            files.append(f)
            if f.size != blob.size:
                raise IntegrityError(f"blob {blob.digest} is {f.size} bytes, manifest says "
                                     f"{blob.size}")
        image = Image(BytesReadAt(bootstrap), files)
    except BaseException:
        for f in files:
            with contextlib.suppress(OSError):
                f.close()
        raise
    return OpenedImage(str(ref), image, list(files), manifest, files)
