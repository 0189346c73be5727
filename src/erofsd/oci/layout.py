"""An OCI image layout directory: ``oci-layout``, ``index.json``, ``blobs/sha256/``.

Blobs are written to a temporary name and renamed into place, and the
index is rewritten atomically under an exclusive lock, so a reader never
sees a half-written blob or index, and two writers adding tags to one
layout do not lose each other's work.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import BadReference, NotFound
from .descriptor import Descriptor, canonical_json, check_digest, sha256_digest, verify_bytes
from .mediatypes import OCI_INDEX, OCI_LAYOUT_VERSION, REF_NAME

TEMP_PREFIX = ".erofsd-tmp-"
MAX_METADATA_BLOB = 64 << 20  # manifests, configs, indexes: never a data blob


class OciLayout:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @classmethod
    def open(cls, root: str | os.PathLike) -> OciLayout:
        layout = cls(root)
        marker = layout.root / "oci-layout"
        try:
            version = json.loads(marker.read_text()).get("imageLayoutVersion")
        except FileNotFoundError:
            if not layout.root.exists():
                raise NotFound(f"no such image layout: {layout.root}") from None
            raise BadReference(f"{layout.root} is not an OCI image layout "
                               "(no oci-layout file)") from None
        except (OSError, ValueError, AttributeError) as e:
            raise BadReference(f"{marker}: unreadable: {e}") from None
        if version != OCI_LAYOUT_VERSION:
            raise BadReference(f"{marker}: unsupported layout version {version!r}")
        return layout

    @classmethod
    def create(cls, root: str | os.PathLike) -> OciLayout:
        """Open a layout, making it first if the directory is missing or empty."""
        layout = cls(root)
        if layout.root.is_dir() and (layout.root / "oci-layout").exists():
            return cls.open(root)
        if layout.root.exists() and (not layout.root.is_dir() or any(layout.root.iterdir())):
            raise BadReference(f"{layout.root} exists and is not an OCI image layout")
        (layout.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout._write_atomic("oci-layout",
                             canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
        layout._write_atomic("index.json", canonical_json(_empty_index()))
        return layout

    # -- blobs --------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str, what: str = "blob") -> bytes:
        """A small blob (manifest, config, index), verified against its digest."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_METADATA_BLOB + 1)
        except FileNotFoundError:
            raise NotFound(f"{what} {digest} is missing from {self.root}") from None
        if len(data) > MAX_METADATA_BLOB:
            raise BadReference(f"{what} {digest} is too large to be metadata")
        return verify_bytes(data, digest, f"{what} in {self.root}")

    def temp_dir(self) -> str:
        """A place on the layout's filesystem for files that will be renamed into it."""
        return str(self.root)

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_digest(data)
        if not self.has_blob(digest):
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.put_file(tmp, digest)
        return digest

    def put_file(self, path: str, digest: str) -> bool:
        """Move a finished file into place under its digest; False if it was already there."""
        target = self.blob_path(digest)
        if target.exists():
            os.unlink(path)
            return False
        os.chmod(path, 0o644)
        os.replace(path, target)
        return True

    # -- index --------------------------------------------------------------

    def index(self) -> dict:
        try:
            value = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            raise BadReference(f"{self.root} has no index.json") from None
        except ValueError as e:
            raise BadReference(f"{self.root}/index.json is not JSON: {e}") from None
        if not isinstance(value, dict) or not isinstance(value.get("manifests", []), list):
            raise BadReference(f"{self.root}/index.json is not an image index")
        return value

    def manifests(self) -> list[Descriptor]:
        return [Descriptor.from_json(m, f"index.json entry {i}")
                for i, m in enumerate(self.index().get("manifests", []))]

    def tags(self) -> dict[str, Descriptor]:
        return {d.annotations[REF_NAME]: d for d in self.manifests() if REF_NAME in d.annotations}

    def resolve(self, tag: str) -> Descriptor:
        found = self.tags().get(tag)
        if found is None:
            known = ", ".join(sorted(self.tags())) or "none"
            raise NotFound(f"no tag {tag!r} in {self.root} (tags: {known})")
        return found

    def set_tag(self, tag: str, manifest: Descriptor) -> None:
        """Point ``tag`` at a manifest, replacing what it named before."""
        entry = Descriptor(manifest.media_type, manifest.digest, manifest.size,
                           {**manifest.annotations, REF_NAME: tag}, manifest.platform)
        with self._locked():
            index = self.index()
            kept = [m for m in index.get("manifests", [])
                    if (m.get("annotations") or {}).get(REF_NAME) != tag]
            index["manifests"] = [*kept, entry.to_json()]
            index.setdefault("schemaVersion", 2)
            index.setdefault("mediaType", OCI_INDEX)
            self._write_atomic("index.json", canonical_json(index))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_atomic(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.root / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _empty_index() -> dict:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
