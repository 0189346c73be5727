"""The fscache data path: erofsd as the cachefiles on-demand daemon.

The kernel mounts ``-t erofs none -o fsid=F[,domain_id=D]`` and does the
sharing itself: one fscache volume per domain, one cookie per blob per
domain. For every cookie it OPENs, the daemon finds what to serve among
the mounts attached here (by the volume key and the cookie key: the fsid
for a bootstrap, the blob's digest tag for a blob), then answers READs of
holes from the verified bootstrap or through the erofsd cache. A READ that
cannot be filled is completed unfilled, so the kernel sees the hole and the
reader gets EIO, never zeros.

The /dev/cachefiles fd is kept by the holder as well, so after a daemon
dies a new one takes it back and, once it has adopted every mount, writes
``restore``: the requests the old daemon left are sent again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
from pathlib import Path
from typing import ClassVar

import trio

from ..cache.blob import CachedBlob
from ..cache.store import BlobCache
from ..errors import AlreadyExists, ErofsdError
from ..kernel import fscache
from ..kernel.mount import mount_erofs_ondemand
from ..oci.image import BlobRef
from ..oci.source import BlobSource
from .base import DataPath, Mount, unmount
from .holderlink import HolderLink

log = logging.getLogger("erofsd.fscache")
KEPT_NAME = "cachefiles"


@dataclasses.dataclass(frozen=True)
class Target:
    """What a cookie serves: a bootstrap file, or a blob through the cache."""

    bootstrap_path: str = ""
    size: int = 0
    blob: BlobRef | None = None
    source: BlobSource | None = None


def targets_of(mount: Mount) -> dict[tuple[str, str], Target]:
    """The cookies a mount's kernel mount will OPEN: (volume key, cookie key) -> target."""
    manifest = mount.erofsd_manifest
    table = {(mount.volume, mount.fsid): Target(bootstrap_path=mount.bootstrap_path,
                                                size=manifest.bootstrap.size)}
    for ref in manifest.blobs:
        table[(mount.volume, ref.digest.split(":", 1)[1])] = Target(blob=ref,
                                                                    source=mount.source)
    return table


@dataclasses.dataclass
class _Object:
    fd: int
    target: Target
    cached: CachedBlob | None = None


class FscachePath(DataPath):
    name: ClassVar[str] = "fscache"
    fills_through_cache: ClassVar[bool] = False
    small_blocks: ClassVar[bool] = False

    def __init__(self, link: HolderLink, cache: BlobCache, state_dir: Path) -> None:
        self.link = link
        self.cache = cache
        self.directory = str(state_dir / "fscache")
        self.fd = -1
        self._failover = False
        # (volume key, cookie key) -> mount name -> target: a cookie stays known
        # while any attached mount provides it
        self._targets: dict[tuple[str, str], dict[str, Target]] = {}
        self._objects: dict[int, _Object] = {}
        self.opens: list[dict] = []  # every OPEN, for status and tests
        self.reads = 0
        self.read_bytes = 0  # bytes the kernel asked for in READs
        self.failed_reads = 0
        self._limiter = trio.CapacityLimiter(8)

    @staticmethod
    def problem() -> str | None:
        return fscache.supported()

    # -- the interface ----------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Take the device from the holder (a daemon before us died), or open and bind it."""
        kept = self.link.kept.pop(KEPT_NAME, None)
        if kept is not None:
            self.fd, self._failover = kept, True
        else:
            self.fd = await trio.to_thread.run_sync(fscache.open_device, self.directory)
            await self.link.keep(KEPT_NAME, self.fd)
        os.set_blocking(self.fd, False)
        await nursery.start(self._serve)

    def still_mounted(self, fstype: str | None) -> bool:
        return fstype == "erofs"

    async def attach(self, mount: Mount) -> None:
        """The kernel mounts by fsid and asks for its cookies while mount(2) runs."""
        self._learn(mount)
        try:
            await trio.to_thread.run_sync(mount_erofs_ondemand, mount.mountpoint, mount.fsid,
                                          mount.domain_id)
        except OSError as e:
            self._forget(mount)
            cls = AlreadyExists if e.errno == errno.EEXIST else ErofsdError
            raise cls(f"the kernel refused to mount fsid {mount.fsid}"
                      + (f" in domain {mount.domain_id}" if mount.domain_id else "")
                      + f": {e.strerror} (see dmesg)", errno=e.errno) from None
        except BaseException:
            self._forget(mount)
            raise

    async def adopt(self, mount: Mount) -> None:
        self._learn(mount)

    async def resume(self) -> None:
        if self._failover:  # have the kernel resend what the daemon before us left
            fscache.restore(self.fd)
            log.info("wrote restore to %s", fscache.DEVICE)

    async def detach(self, mount: Mount, *, lazy: bool) -> None:
        await unmount(mount.mountpoint, lazy=lazy)
        self._forget(mount)

    def status(self) -> dict:
        return {"fscache": {"opens": list(self.opens), "objects": len(self._objects),
                            "reads": self.reads, "read_bytes": self.read_bytes,
                            "failed_reads": self.failed_reads}}

    def _learn(self, mount: Mount) -> None:
        for key, target in targets_of(mount).items():
            self._targets.setdefault(key, {})[mount.name] = target

    def _forget(self, mount: Mount) -> None:
        for key in targets_of(mount):
            providers = self._targets.get(key, {})
            providers.pop(mount.name, None)
            if not providers:
                self._targets.pop(key, None)

    def _target(self, key: tuple[str, str]) -> Target | None:
        providers = self._targets.get(key)
        return next(iter(providers.values())) if providers else None

    # -- messages ---------------------------------------------------------------

    async def _serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                await trio.lowlevel.wait_readable(self.fd)
                while (message := fscache.read_message(self.fd)) is not None:
                    nursery.start_soon(self._handle, message)

    async def _handle(self, message: fscache.Message) -> None:
        """One message. Nothing may escape: a bug answers with an error, and is logged."""
        try:
            if message.opcode == fscache.OP_OPEN:
                await self._open(message)
            elif message.opcode == fscache.OP_READ:
                await self._read(message)
            elif message.opcode == fscache.OP_CLOSE:
                await self._close(message)
        except Exception:
            log.exception("fscache message %d (opcode %d) failed", message.msg_id,
                          message.opcode)
            if message.opcode == fscache.OP_OPEN and message.object_id not in self._objects:
                with contextlib.suppress(OSError):
                    fscache.copen(self.fd, message.msg_id, -errno.EIO)
                    os.close(message.fd)

    async def _open(self, message: fscache.Message) -> None:
        target = self._target((message.volume_key, message.cookie_key))
        kind = "bootstrap" if target and target.blob is None else "blob"
        self.opens.append({"volume": message.volume_key, "key": message.cookie_key,
                           "kind": kind if target else "unknown"})
        if target is None:
            log.warning("OPEN of an unknown cookie %s in %s: refused", message.cookie_key,
                        message.volume_key)
            fscache.copen(self.fd, message.msg_id, -errno.ENOENT)
            os.close(message.fd)
            return
        obj = _Object(message.fd, target)
        size = target.size
        if target.blob is not None:
            try:  # a reference of the kernel's own, held until its CLOSE
                obj.cached = await trio.to_thread.run_sync(
                    self.cache.acquire, message.volume_key, target.blob, [target.source],
                    limiter=self._limiter)
            except (ErofsdError, OSError) as e:
                log.error("cannot open blob %s: %s", target.blob.digest, e)
                fscache.copen(self.fd, message.msg_id, -(e.errno or errno.EIO))
                os.close(message.fd)
                return
            size = target.blob.data_size
        self._objects[message.object_id] = obj
        fscache.copen(self.fd, message.msg_id, size)

    async def _read(self, message: fscache.Message) -> None:
        obj = self._objects.get(message.object_id)
        if obj is None:
            log.error("READ of object %d, which was never opened", message.object_id)
            return
        self.reads += 1
        self.read_bytes += message.length
        try:
            data = await trio.to_thread.run_sync(self._fetch, obj, message.offset,
                                                 message.length, limiter=self._limiter)
            fscache.write_range(obj.fd, data, message.offset, message.length)
        except (ErofsdError, OSError) as e:
            self.failed_reads += 1
            log.error("cannot fill %d+%d of %s: %s", message.offset, message.length,
                      obj.target.blob.digest if obj.target.blob else obj.target.bootstrap_path, e)
        finally:  # unfilled, the kernel finds a hole and its reader gets EIO
            fscache.complete_read(obj.fd, message.msg_id)

    @staticmethod
    def _fetch(obj: _Object, offset: int, length: int) -> bytes:
        if obj.cached is not None:
            return obj.cached.read_at(offset, length)
        with open(obj.target.bootstrap_path, "rb") as f:
            return os.pread(f.fileno(), length, offset)

    async def _close(self, message: fscache.Message) -> None:
        obj = self._objects.pop(message.object_id, None)
        if obj is None:
            return
        os.close(obj.fd)
        if obj.cached is not None:
            self.cache.release(obj.cached)
