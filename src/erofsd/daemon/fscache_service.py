"""The daemon's side of the fscache data path: erofsd as the cachefiles on-demand daemon.

The kernel mounts ``-t erofs none -o fsid=F[,domain_id=D]`` and does the
sharing itself: one fscache volume per domain, one cookie per blob per
domain. For every cookie it OPENs, the daemon finds what to serve from
the mounts it knows (the volume key and the cookie key: the fsid for a
bootstrap, the blob digest tag for a blob), then answers READs of holes
from the verified bootstrap or through the erofsd cache. A READ that
cannot be filled is completed unfilled, so the kernel sees the hole and
the reader gets EIO, never zeros.

The /dev/cachefiles fd is kept by the holder as well, so after a daemon
dies a new one takes it back and writes ``restore``: the requests the old
daemon left are sent again, and objects it had opened are opened again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import trio

from ..cache.blob import CachedBlob
from ..cache.store import BlobCache
from ..errors import ErofsdError
from ..oci.image import BlobRef
from ..oci.source import BlobSource
from ..paths import fscache
from .holderlink import HolderLink

log = logging.getLogger("erofsd.fscache")
KEPT_NAME = "cachefiles"


@dataclasses.dataclass(frozen=True)
class Target:
    """What a cookie serves: a bootstrap file, or a blob through the cache."""

    bootstrap_path: str = ""
    size: int = 0
    blob: BlobRef | None = None
    sources: tuple[BlobSource, ...] = ()


@dataclasses.dataclass
class _Object:
    fd: int
    target: Target
    cached: CachedBlob | None = None


class FscacheService:
    def __init__(self, link: HolderLink, cache: BlobCache, state_dir: Path) -> None:
        self.link = link
        self.cache = cache
        self.directory = str(state_dir / "fscache")
        self.fd = -1
        self.targets: dict[tuple[str, str], Target] = {}
        self._objects: dict[int, _Object] = {}
        self.opens: list[dict] = []  # every OPEN, for status and tests
        self.reads = 0
        self.read_bytes = 0  # bytes the kernel asked for in READs
        self.failed_reads = 0
        self._limiter = trio.CapacityLimiter(8)

    async def start(self) -> None:
        """Take the device from the holder (then ``restore``), or open and bind it."""
        kept = self.link.kept.pop(KEPT_NAME, None)
        if kept is not None:
            self.fd = kept
        else:
            self.fd = await trio.to_thread.run_sync(fscache.open_device, self.directory)
            await self.link.keep(KEPT_NAME, self.fd)
        os.set_blocking(self.fd, False)

    def restore(self) -> None:
        """Once the mounts are known again: have the kernel resend what was pending."""
        fscache.restore(self.fd)
        log.info("wrote restore to %s", fscache.DEVICE)

    def set_targets(self, targets: dict[tuple[str, str], Target]) -> None:
        self.targets = targets

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
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
        key = (message.volume_key, message.cookie_key)
        target = self.targets.get(key)
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
            try:
                obj.cached = await trio.to_thread.run_sync(
                    self.cache.acquire, message.volume_key, target.blob, list(target.sources),
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

    def view(self) -> dict:
        return {"opens": list(self.opens), "objects": len(self._objects), "reads": self.reads,
                "read_bytes": self.read_bytes, "failed_reads": self.failed_reads}


def mount_options(fsid: str, domain_id: str | None) -> str:
    return f"fsid={fsid}" + (f",domain_id={domain_id}" if domain_id else "")


def targets_of(mounts: Sequence[tuple[str, str, str, int, list[BlobRef], BlobSource]]
               ) -> dict[tuple[str, str], Target]:
    """(volume, fsid, bootstrap path, size, blobs, source) per mount -> the cookie table."""
    table: dict[tuple[str, str], Target] = {}
    for volume, fsid, bootstrap, size, blobs, source in mounts:
        table[(volume, fsid)] = Target(bootstrap_path=bootstrap, size=size)
        for ref in blobs:
            table[(volume, ref.digest.split(":", 1)[1])] = Target(blob=ref, sources=(source,))
    return table
