"""The one mount record, and the interface every data path implements.

The daemon owns each ``Mount``: it claims the mount point, resolves and
pins the image, registers the mount in the domain registry, asks a data
path to attach it, and records it (``daemon/mounttable.py``). A data path
only makes the kernel serve the mount and answers the kernel's questions:

    attach(mount)        mount it and start serving it
    adopt(mount)         after a daemon restart: serve a mount that stayed
    detach(mount, lazy)  unmount it and stop serving it
    describe(mount)      what status says about it (state, worker pid, ...)

plus ``start`` (before any mount), ``resume`` (once every mount is adopted),
``stop`` and ``status`` (the path's own figures).
"""

from __future__ import annotations

import abc
import dataclasses
import errno
import functools
import json
import time
from typing import Any, ClassVar

import trio

from ..cache.blob import CachedBlob
from ..cache.fill import BackgroundFill
from ..domain import Registration, mount_name, volume_of
from ..errors import Busy, ErofsdError
from ..kernel.mount import umount
from ..oci.image import ErofsdManifest
from ..oci.indexed import indexed_manifest
from ..oci.source import BlobSource, PinnedIndex, SourcedBlob

PERSISTED = ("mountpoint", "image", "fsid", "domain_id", "mode", "manifest", "manifest_digest",
             "insecure", "mirror", "worker_pid", "created", "prefetch", "index_manifest",
             "index_digest")


@dataclasses.dataclass(eq=False)
class Mount:
    """One image mounted by the daemon.

    The persisted fields (``PERSISTED``) say what was asked and pin what was
    served, manifest included, so a restarted daemon takes the mount back
    without the network. The rest exists while a daemon serves the mount.
    """

    mountpoint: str
    image: str  # the reference as the user gave it
    fsid: str
    domain_id: str | None
    mode: str  # the data path's name
    manifest: str  # the manifest as fetched (JSON text)
    manifest_digest: str
    insecure: bool = False
    mirror: str | None = None
    worker_pid: int | None = None  # the FUSE worker process
    created: float = dataclasses.field(default_factory=time.time)
    prefetch: bool = False  # fetch the whole image in the background once mounted
    index_manifest: str | None = None  # an ordinary image is served through this index
    index_digest: str | None = None
    # live
    source: BlobSource | None = dataclasses.field(default=None, repr=False)
    bootstrap_path: str = ""
    bootstrap_fd: int = -1  # holds a shared lock: GC leaves the bootstrap alone
    registration: Registration | None = dataclasses.field(default=None, repr=False)
    fill: BackgroundFill | None = dataclasses.field(default=None, repr=False)

    @property
    def name(self) -> str:
        return mount_name(self.domain_id, self.fsid)

    @property
    def volume(self) -> str:
        return volume_of(self.domain_id, self.fsid)

    @property
    def pinned_index(self) -> PinnedIndex | None:
        if self.index_manifest is None or self.index_digest is None:
            return None
        return PinnedIndex(self.index_manifest.encode(), self.index_digest)

    @functools.cached_property
    def erofsd_manifest(self) -> ErofsdManifest:
        index = self.pinned_index
        if index is not None:
            return indexed_manifest(self.manifest.encode(), self.manifest_digest, index)
        return ErofsdManifest.parse(self.manifest.encode(), self.manifest_digest)

    def sourced_blobs(self) -> list[SourcedBlob]:
        """The blobs to register: each with where to fetch it."""
        assert self.source is not None
        return [SourcedBlob(ref, self.source) for ref in self.erofsd_manifest.blobs]

    def cached_blobs(self) -> list[CachedBlob]:
        """The registered cookies' objects, one per device in device-table order (a blob
        that two layers share is named twice, as the kernel's device table has it)."""
        assert self.registration is not None
        by_digest = dict(zip(self.registration.blobs, self.registration.objects(), strict=True))
        return [by_digest[ref.digest] for ref in self.erofsd_manifest.blobs]

    def to_json(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in PERSISTED}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Mount:
        """A persisted record back; ValueError when it lacks a field every mount has."""
        missing = [f for f in PERSISTED[:7] if f not in value]  # the fields without defaults
        if missing:
            raise ValueError(f"a mount record lacks {', '.join(missing)}")
        return cls(**{field: value[field] for field in PERSISTED if field in value})

    def dumps(self) -> str:
        return json.dumps(self.to_json())


class DataPath(abc.ABC):
    """The interface every data path implements; the hooks most paths need not act on
    are no-ops here."""

    name: ClassVar[str]
    # whether the data the kernel reads is filled through the cache's blobs (so a
    # mount can prefetch them), or by the kernel into a cache of its own (fscache)
    fills_through_cache: ClassVar[bool] = True
    # whether it serves images of 512-byte blocks (an ordinary image's index); fscache
    # serves only blocks of the page size
    small_blocks: ClassVar[bool] = True

    @staticmethod
    @abc.abstractmethod
    def problem() -> str | None:
        """Why this path cannot run on this machine, or None when it can."""

    async def start(self, nursery: trio.Nursery) -> None:
        """Start serving the kernel (before any mount is attached or adopted)."""
        return None  # nothing to do unless a path says otherwise

    @abc.abstractmethod
    def still_mounted(self, fstype: str | None) -> bool:
        """Whether a recorded mount whose mount point now has ``fstype`` is still ours."""

    @abc.abstractmethod
    async def attach(self, mount: Mount) -> None:
        """Mount it and serve it; on failure, undo what this call did."""

    @abc.abstractmethod
    async def adopt(self, mount: Mount) -> None:
        """Serve a mount that outlived the daemon before this one."""

    async def resume(self) -> None:
        """Every mount is adopted: answer what waited for the daemon."""
        return None  # nothing to do unless a path says otherwise

    @abc.abstractmethod
    async def detach(self, mount: Mount, *, lazy: bool) -> None:
        """Unmount it and stop serving it."""

    def describe(self, mount: Mount) -> dict[str, Any]:
        """Fields status shows for the mount (at least its state)."""
        return {"state": "ok"}

    def blob_stats(self, mount: Mount) -> dict[str, dict[str, Any]]:
        """Per-blob counters kept outside the daemon (by a worker), by digest."""
        return {}

    def status(self) -> dict[str, Any]:
        """The path's own figures for the daemon's status."""
        return {}

    async def stop(self) -> None:
        """The daemon is going away and takes its mounts down."""
        return None  # nothing to do unless a path says otherwise


async def unmount(mountpoint: str, *, lazy: bool = False, busy_hint: str = "") -> None:
    """umount2(2) with erofsd's errors; a mount point no longer mounted is fine."""
    try:
        await trio.to_thread.run_sync(lambda: umount(mountpoint, lazy=lazy))
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise Busy(f"{mountpoint} is busy: close what uses it first{busy_hint}") from None
        if e.errno != errno.EINVAL:  # EINVAL: no longer mounted (a dead worker's, say)
            raise ErofsdError(f"cannot unmount {mountpoint}: {e.strerror}",
                              errno=e.errno) from None

