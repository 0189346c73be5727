"""Where blob bytes come from, behind one narrow interface.

``BlobSource`` reads a byte range of a blob and reports a blob's size;
that is all the cache asks of it, and all a fault-injecting test wraps.
``resolve_image`` turns a reference into a manifest plus the source its
blobs come from (an OCI layout, a registry, optionally a static mirror);
``pinned_image`` does the same for a manifest already resolved and kept,
with no network, so a later reader serves exactly what was resolved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Protocol

from ..errors import IntegrityError, NotFound, SourceError
from .descriptor import sha256_digest, verify_bytes
from .image import BlobRef
from .layout import OciLayout
from .manifest import select_manifest
from .reference import LayoutRef, RegistryRef, parse_reference
from .registry import RegistryClient
from .transport import Transport, take_range

log = logging.getLogger("erofsd.source")


class BlobSource(Protocol):
    name: str

    def read_range(self, digest: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset``, or a SourceError."""
        ...

    def blob_size(self, digest: str) -> int: ...

    def read_manifest(self, reference: str) -> bytes:
        """A manifest of the same repository by its digest (verified) or tag; NotFound."""
        ...

    def read_referrers(self, digest: str) -> bytes | None:
        """The referrers API's list for ``digest``; None where there is no such API."""
        ...


def read_from_sources(sources: Sequence[BlobSource], digest: str, offset: int,
                      length: int) -> bytes:
    """The first source that answers wins; a failing one is logged and skipped."""
    last_error: SourceError | None = None
    for source in list(sources):
        try:
            return source.read_range(digest, offset, length)
        except SourceError as e:
            log.warning("source %s failed for %s: %s", source.name, digest, e)
            last_error = e
    if last_error is None:
        raise SourceError(f"blob {digest}: no source to fetch it from")
    raise last_error


class OpenFiles:
    """Files kept open for reading, shared by every LayoutSource of the process and
    bounded: no source leaves descriptors behind when it is dropped, and a file pushed
    out while a read uses it is closed when the last such read is done (its number is
    never reused under a reader)."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._files: OrderedDict[str, list] = OrderedDict()  # path -> [fd, readers, out]
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def opened(self, path: str) -> Iterator[int]:
        """An fd reading ``path`` for the length of the block; FileNotFoundError."""
        with self._lock:
            held = self._files.get(path)
            if held is None:
                held = self._files[path] = [os.open(path, os.O_RDONLY | os.O_CLOEXEC), 0, False]
                while len(self._files) > self._keep:
                    out = self._files.popitem(last=False)[1]
                    out[2] = True
                    if not out[1]:
                        os.close(out[0])
            else:
                self._files.move_to_end(path)
            held[1] += 1
        try:
            yield held[0]
        finally:
            with self._lock:
                held[1] -= 1
                if held[2] and not held[1]:
                    os.close(held[0])


LAYOUT_FILES = OpenFiles(64)


class LayoutSource:
    """Blobs of a local OCI layout, read with pread through files kept open."""

    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout
        self.name = f"oci:{layout.root}"

    @contextlib.contextmanager
    def _opened(self, digest: str) -> Iterator[int]:
        try:
            with LAYOUT_FILES.opened(str(self.layout.blob_path(digest))) as fd:
                yield fd
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from {self.layout.root}") from None

    def read_range(self, digest: str, offset: int, length: int) -> bytes:
        with self._opened(digest) as fd:
            data = os.pread(fd, length, offset)
        if len(data) != length:
            raise SourceError(f"blob {digest} in {self.layout.root} is shorter than "
                              f"{offset + length} bytes", errno=errno.EIO)
        return data

    def blob_size(self, digest: str) -> int:
        with self._opened(digest) as fd:
            return os.fstat(fd).st_size

    def read_manifest(self, reference: str) -> bytes:
        if not reference.startswith("sha256:"):
            found = self.layout.tags().get(reference)
            if found is None:
                raise NotFound(f"{self.layout.root} has no tag {reference}")
            reference = found.digest
        if not self.layout.has_blob(reference):
            raise NotFound(f"{self.layout.root} has no manifest {reference}")
        return self.layout.read_blob(reference, "manifest")

    def read_referrers(self, digest: str) -> bytes | None:
        return None  # a layout has only the tag schema


class RegistrySource:
    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.name = f"docker://{client.host}/{repository}"

    def read_range(self, digest: str, offset: int, length: int) -> bytes:
        return self.client.read_range(self.repository, digest, offset, length)

    def blob_size(self, digest: str) -> int:
        size = self.client.blob_size(self.repository, digest)
        if size is None:
            raise NotFound(f"{self.name} has no blob {digest}")
        return size

    def read_manifest(self, reference: str) -> bytes:
        pinned = reference.startswith("sha256:")
        ref = RegistryRef(self.client.host, self.repository, None if pinned else reference,
                          reference if pinned else None)
        return self.client.get_manifest(ref)[0]  # checked against a digest it asks for

    def read_referrers(self, digest: str) -> bytes | None:
        return self.client.get_referrers(self.repository, digest)


class MirrorSource:
    """A static HTTP(S) mirror serving ``blobs/sha256/<hex>``, before a fallback source.

    Whatever a mirror sends is verified by the cache like any other bytes,
    so an untrusted mirror can slow reads down but never corrupt them.
    """

    def __init__(self, base_url: str, transport: Transport, fallback: BlobSource) -> None:
        self.base = base_url.rstrip("/")
        self.transport = transport
        self.fallback = fallback
        self.name = f"{self.base} (then {fallback.name})"

    def _url(self, digest: str) -> str:
        return f"{self.base}/blobs/sha256/{digest.split(':', 1)[1]}"

    def read_range(self, digest: str, offset: int, length: int) -> bytes:
        last = offset + length - 1
        what = f"mirror {self._url(digest)} bytes {offset}-{last}"

        def attempt() -> bytes:
            with self.transport.client.send(
                    "GET", self._url(digest), headers={"Range": f"bytes={offset}-{last}"}) as r:
                return take_range(r, offset, length, what)

        try:
            return self.transport.call(what, attempt)
        except SourceError:
            return self.fallback.read_range(digest, offset, length)

    def blob_size(self, digest: str) -> int:
        return self.fallback.blob_size(digest)

    def read_manifest(self, reference: str) -> bytes:
        return self.fallback.read_manifest(reference)

    def read_referrers(self, digest: str) -> bytes | None:
        return self.fallback.read_referrers(digest)


@dataclasses.dataclass(frozen=True)
class SourcedBlob:
    """A blob of an image, and where to fetch it."""

    ref: BlobRef
    source: BlobSource

    @property
    def digest(self) -> str:
        return self.ref.digest


@dataclasses.dataclass(frozen=True)
class PinnedIndex:
    """The index (an artifact beside an ordinary image) a reader serves the image through."""

    manifest: bytes
    digest: str


@dataclasses.dataclass
class ResolvedImage:
    reference: str
    manifest: bytes
    digest: str
    source: BlobSource
    index: PinnedIndex | None = None

    def read_blob(self, digest: str, size: int, what: str) -> bytes:
        """A whole (small) blob, verified against its digest."""
        return verify_bytes(self.source.read_range(digest, 0, size), digest, what)


def make_transport(insecure: bool = False, **kwargs) -> Transport:
    return Transport(insecure=insecure, **kwargs)


def source_for(text: str, transport: Transport, mirror: str | None = None) -> BlobSource:
    """The blob source of a reference, without resolving anything (no network)."""
    ref = parse_reference(text)
    if isinstance(ref, LayoutRef):
        source: BlobSource = LayoutSource(OciLayout.open(ref.path))
    else:
        source = RegistrySource(RegistryClient(ref.host, transport), ref.repository)
    return MirrorSource(mirror, transport, source) if mirror else source


def pinned_image(text: str, manifest: bytes, digest: str, *, transport: Transport,
                 mirror: str | None = None, index: PinnedIndex | None = None) -> ResolvedImage:
    """The image ``text`` named when it resolved to ``manifest``, whatever it names now."""
    for raw, pinned in ((manifest, digest), *([(index.manifest, index.digest)] if index else [])):
        if sha256_digest(raw) != pinned:
            raise IntegrityError(f"a kept manifest of {text} does not match its digest {pinned}")
    return ResolvedImage(text, manifest, digest, source_for(text, transport, mirror), index)


def resolve_image(text: str, *, transport: Transport | None = None, mirror: str | None = None,
                  platform: str | None = None) -> ResolvedImage:
    """The manifest a reference names (an index resolved by platform) and its blob source."""
    ref = parse_reference(text)
    if isinstance(ref, LayoutRef):
        layout = OciLayout.open(ref.path)
        descriptor = layout.resolve(ref.tag)
        raw = layout.read_blob(descriptor.digest, "manifest")
        chosen = select_manifest(raw, descriptor.media_type, platform)
        if chosen is not None:
            descriptor = chosen
            raw = layout.read_blob(chosen.digest, "manifest")
        source: BlobSource = LayoutSource(layout)
        digest = descriptor.digest
    else:
        transport = transport or make_transport()
        client = RegistryClient(ref.host, transport)
        raw, media_type, digest = client.get_manifest(ref)
        chosen = select_manifest(raw, media_type, platform)
        if chosen is not None:
            raw, _, digest = client.get_manifest(ref.with_reference(digest=chosen.digest))
        source = RegistrySource(client, ref.repository)
    if mirror:
        source = MirrorSource(mirror, transport or make_transport(), source)
    return ResolvedImage(str(ref), raw, digest, source)

