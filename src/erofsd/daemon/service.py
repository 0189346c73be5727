"""The daemon's core: mount and unmount images in domains, over either data path.

A mount resolves the image, keeps its verified bootstrap, registers the
mount in the domain registry (which opens or shares one cached blob per
(volume, blob)), then attaches a data path:

- fanotify: the blobs' cache files are marked and served by events, and
  the kernel mounts the bootstrap with ``device=<cache file>`` per blob;
- fscache: the kernel mounts ``-o fsid=F[,domain_id=D]`` and asks for its
  cookies through /dev/cachefiles; here the kernel decides EEXIST and does
  the sharing, and the registry mirrors what it accepted;
- fuse: a worker process serves the image through pyfuse3.

Anything that fails part-way is undone. Every mount is recorded on disk
(with its manifest), so a restarted daemon finds its mounts again without
the network.

Stopping: ``stop`` unmounts every mount and refuses while one is busy;
``stop --keep-mounts`` (and SIGTERM for busy mounts) leaves mounts in place
for the next daemon: FUSE workers keep serving, and fanotify reads of
uncached bytes wait in the holder until a daemon answers them.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import time
from pathlib import Path
from typing import Any

import trio

from ..cache.blob import CachedBlob
from ..cache.store import BlobCache
from ..domain import DomainRegistry, Mount, default_fsid, validate_name, volume_of
from ..errors import (
    AlreadyExists,
    Busy,
    ErofsdError,
    InvalidArgument,
    NotADirectory,
    NotFound,
)
from ..oci.image import ErofsdManifest
from ..oci.source import resolve_image, source_for
from ..oci.transport import Transport
from ..paths import fanotify, fscache
from ..paths.kernel_mount import MS_RDONLY, mount_erofs, umount
from ..paths.kernel_mount import mount as kernel_mount
from .fanotify_service import FanotifyService
from .fscache_service import FscacheService, mount_options, targets_of
from .fuse_workers import FuseWorkers
from .holderlink import HolderLink
from .mounttable import MountRecord, MountTable, mounted_filesystems

log = logging.getLogger("erofsd.daemon")
MODES = ("auto", "fanotify", "fscache", "fuse")
READAHEAD_KB = 4096


@dataclasses.dataclass
class LiveMount:
    record: MountRecord
    mount: Mount
    bootstrap_fd: int
    bootstrap_path: str = ""
    manifest: ErofsdManifest | None = None
    source: Any = None


class Daemon:
    def __init__(self, state_dir: str | os.PathLike, socket_path: str) -> None:
        self.state_dir = Path(state_dir)
        self.socket_path = socket_path
        daemon_dir = self.state_dir / "daemon"
        daemon_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_path = str(daemon_dir / "daemon.log")
        self.cache = BlobCache(self.state_dir)
        self.registry = DomainRegistry(self._acquire, self._release)
        self.table = MountTable(daemon_dir / "mounts.json")
        self.fanotify_problem = fanotify.supported()
        self.fscache_problem = fscache.supported()
        self.holder = (HolderLink(str(daemon_dir / "holder.sock"), self.log_path)
                       if self.fanotify_problem is None or self.fscache_problem is None
                       else None)
        self.fanotify = FanotifyService(self.holder) if self.fanotify_problem is None else None
        self.fscache = (FscacheService(self.holder, self.cache, self.state_dir)
                        if self.fscache_problem is None else None)
        self.fuse = FuseWorkers(self.state_dir, self.log_path)
        self.mounts: dict[str, LiveMount] = {}
        self._busy: set[str] = set()
        self._transports = {False: Transport(), True: Transport(insecure=True)}
        self.started = time.time()

    # -- cookies (called by the registry, in threads) ------------------------------

    def _acquire(self, volume: str, blob: str, context: Any) -> CachedBlob:
        manifest, source = context
        ref = next(b for b in manifest.blobs if b.digest == blob)
        return self.cache.acquire(volume, ref, [source])

    def _release(self, blob: CachedBlob) -> None:
        if self.fanotify is not None:
            self.fanotify.unwatch(blob)
        self.cache.release(blob)

    # -- mount ------------------------------------------------------------------

    def resolve_mode(self, mode: str) -> str:
        if mode not in MODES:
            raise InvalidArgument(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if mode == "auto":
            if self.fanotify is not None:
                return "fanotify"
            return "fscache" if self.fscache is not None else "fuse"
        if mode == "fanotify" and self.fanotify is None:
            raise InvalidArgument(f"fanotify mode is not available here: {self.fanotify_problem}",
                                  errno=errno.EOPNOTSUPP)
        if mode == "fscache" and self.fscache is None:
            raise InvalidArgument(f"fscache mode is not available here: {self.fscache_problem}",
                                  errno=errno.EOPNOTSUPP)
        return mode

    def _claim(self, mountpoint: str) -> str:
        if not os.path.isabs(mountpoint):
            raise InvalidArgument(f"mount point must be an absolute path: {mountpoint}")
        path = os.path.realpath(mountpoint)
        if not os.path.exists(path):
            raise NotFound(f"mount point {path} does not exist")
        if not os.path.isdir(path):
            raise NotADirectory(f"mount point {path} is not a directory")
        if path in self._busy or path in self.mounts or path in mounted_filesystems():
            raise Busy(f"{path} is already a mount point (or being mounted)")
        self._busy.add(path)
        return path

    async def mount(self, image: str, mountpoint: str, *, fsid: str | None = None,
                    domain_id: str | None = None, mode: str = "auto", insecure: bool = False,
                    mirror: str | None = None) -> dict:
        mode = self.resolve_mode(mode)
        if fsid is not None:
            validate_name(fsid, "fsid")
        if domain_id is not None:
            validate_name(domain_id, "domain_id")
        path = self._claim(mountpoint)
        try:
            return await self._mount(image, path, fsid, domain_id, mode, insecure, mirror)
        finally:
            self._busy.discard(path)

    async def _mount(self, image: str, path: str, fsid: str | None, domain_id: str | None,
                     mode: str, insecure: bool, mirror: str | None) -> dict:
        transport = self._transports[insecure]
        resolved = await trio.to_thread.run_sync(
            lambda: resolve_image(image, transport=transport, mirror=mirror))
        manifest = ErofsdManifest.parse(resolved.manifest, resolved.digest)
        record = MountRecord(
            mountpoint=path, image=image, fsid=fsid or default_fsid(manifest.bootstrap.digest),
            domain_id=domain_id, mode=mode, manifest=resolved.manifest.decode(),
            manifest_digest=resolved.digest, insecure=insecure, mirror=mirror,
            created=time.time())
        live = await self._attach(record, manifest, resolved.source,
                                  lambda: resolved.read_blob(manifest.bootstrap.digest,
                                                             manifest.bootstrap.size,
                                                             "bootstrap"))
        self.mounts[path] = live
        self._save()
        log.info("mounted %s at %s as %s (mode %s)", image, path, live.mount.name, mode)
        return self._mount_view(live)

    async def _attach(self, record: MountRecord, manifest: ErofsdManifest, source,
                      fetch_bootstrap, *, restoring: bool = False) -> LiveMount:
        """Bootstrap, registry, data path; on failure, undo exactly what was done."""
        boot = manifest.bootstrap
        bootstrap_path, boot_fd = await trio.to_thread.run_sync(
            self.cache.bootstrap, boot.digest, boot.size, fetch_bootstrap)
        if record.mode == "fscache":
            return await self._attach_fscache(record, manifest, source, bootstrap_path, boot_fd,
                                              restoring)
        try:
            mount = await self._register(record, manifest, source)
        except BaseException:
            os.close(boot_fd)
            raise
        try:
            blobs = [mount.cookie(b.digest).obj for b in manifest.blobs]
            if record.mode == "fanotify":
                for blob in blobs:
                    await trio.to_thread.run_sync(self.fanotify.watch, blob)
                if not restoring:
                    await trio.to_thread.run_sync(
                        mount_erofs, bootstrap_path, record.mountpoint,
                        [b.data_path for b in blobs])
                    set_readahead(record.mountpoint)
            elif not restoring:
                record.worker_pid = await self.fuse.start(record)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.registry.umount, mount.name)
            os.close(boot_fd)
            raise
        return LiveMount(record, mount, boot_fd, bootstrap_path, manifest, source)

    async def _attach_fscache(self, record: MountRecord, manifest: ErofsdManifest, source,
                              bootstrap_path: str, boot_fd: int, restoring: bool) -> LiveMount:
        """The kernel first (it decides EEXIST and shares cookies), then the registry."""
        pending = LiveMount(record, None, boot_fd, bootstrap_path, manifest, source)
        self._update_fscache_targets(extra=pending)
        try:
            if not restoring:
                options = mount_options(record.fsid, record.domain_id)
                try:
                    await trio.to_thread.run_sync(
                        lambda: kernel_mount("none", record.mountpoint, "erofs", MS_RDONLY,
                                             options))
                except OSError as e:
                    cls = AlreadyExists if e.errno == errno.EEXIST else ErofsdError
                    raise cls(f"the kernel refused to mount fsid {record.fsid}"
                              + (f" in domain {record.domain_id}" if record.domain_id else "")
                              + f": {e.strerror} (see dmesg)", errno=e.errno) from None
            try:
                pending.mount = await self._register(record, manifest, source)
            except BaseException:
                if not restoring:
                    await trio.to_thread.run_sync(umount, record.mountpoint)
                raise
        except BaseException:
            self._update_fscache_targets()
            os.close(boot_fd)
            raise
        return pending

    async def _register(self, record: MountRecord, manifest: ErofsdManifest, source) -> Mount:
        """The mount in the domain registry, which opens or shares its blobs' cookies."""
        return await trio.to_thread.run_sync(lambda: self.registry.mount(
            record.fsid, record.domain_id, [b.digest for b in manifest.blobs],
            context=(manifest, source),
            info={"mountpoint": record.mountpoint, "mode": record.mode, "image": record.image}))

    def _update_fscache_targets(self, extra: LiveMount | None = None) -> None:
        if self.fscache is None:
            return
        lives = [m for m in self.mounts.values() if m.record.mode == "fscache"]
        if extra is not None:
            lives.append(extra)
        self.fscache.set_targets(targets_of([
            (volume_of(m.record.domain_id, m.record.fsid), m.record.fsid, m.bootstrap_path,
             m.manifest.bootstrap.size, list(m.manifest.blobs), m.source) for m in lives]))

    # -- unmount ------------------------------------------------------------------

    async def umount(self, mountpoint: str, *, lazy: bool = False) -> dict:
        path = os.path.realpath(mountpoint)
        live = self.mounts.get(path)
        if live is None:
            raise NotFound(f"{path} is not mounted by erofsd")
        if path in self._busy:
            raise Busy(f"{path} is being mounted or unmounted")
        if lazy and live.record.mode == "fanotify":
            raise InvalidArgument("a fanotify mount cannot be detached lazily: its readers "
                                  "need the daemon until they close their files")
        self._busy.add(path)
        try:
            try:
                await trio.to_thread.run_sync(lambda: umount(path, lazy=lazy))
            except OSError as e:
                if e.errno == errno.EBUSY:
                    raise Busy(f"{path} is busy: close what uses it first"
                               + (" (or use --lazy)" if live.record.mode == "fuse" else ""),
                               errno=errno.EBUSY) from None
                if e.errno != errno.EINVAL:  # EINVAL: no longer mounted (a dead worker's)
                    raise ErofsdError(f"cannot unmount {path}: {e.strerror}",
                                      errno=e.errno) from None
            if live.record.mode == "fuse" and not lazy:
                await self.fuse.wait_exit(live.record.worker_pid)
            await trio.to_thread.run_sync(self.registry.umount, live.mount.name)
            os.close(live.bootstrap_fd)
            self.fuse.forget(path)
            del self.mounts[path]
            self._update_fscache_targets()
            self._save()
            log.info("unmounted %s (%s)", path, live.mount.name)
            return {"mountpoint": path, "name": live.mount.name}
        finally:
            self._busy.discard(path)

    # -- restore after a restart ----------------------------------------------------

    async def restore(self) -> None:
        present = mounted_filesystems()
        for record in self.table.load():
            fstype = present.get(record.mountpoint)
            still_there = (fstype == "erofs" if record.mode in ("fanotify", "fscache")
                           else bool(fstype) and fstype.startswith("fuse"))
            if not still_there:
                log.warning("%s is no longer mounted; forgetting it", record.mountpoint)
                continue
            manifest = ErofsdManifest.parse(record.manifest.encode(), record.manifest_digest)
            try:
                source = source_for(record.image, self._transports[record.insecure],
                                    record.mirror)
                live = await self._attach(record, manifest, source,
                                          lambda: b"", restoring=True)
            except (ErofsdError, OSError) as e:
                log.error("cannot take %s back: %s", record.mountpoint, e)
                continue
            self.mounts[record.mountpoint] = live
            log.info("took back %s (%s, mode %s)", record.mountpoint, live.mount.name,
                     record.mode)
        self._update_fscache_targets()
        self._save()

    # -- views -------------------------------------------------------------------------

    def _save(self) -> None:
        self.table.save([live.record for live in self.mounts.values()])

    def _mount_view(self, live: LiveMount) -> dict:
        view = {"name": live.mount.name, "fsid": live.mount.fsid,
                "domain_id": live.mount.domain_id, "volume": live.mount.volume,
                "blobs": list(live.mount.blobs), **live.mount.info}
        if live.record.mode == "fuse":
            view["worker_pid"] = live.record.worker_pid
            view["state"] = "ok" if self.fuse.alive(live.record.worker_pid) else "broken"
        else:
            view["state"] = "ok"
        return view

    def _cookie_view(self, blob: CachedBlob) -> dict:
        on_disk = blob.pmap.read_disk()
        read = blob.stats.read_bytes + sum(
            self.fuse.stats(mp).get(blob.ref.digest, {}).get("read_bytes", 0)
            for mp, live in self.mounts.items()
            if live.record.mode == "fuse" and live.mount.volume == blob.volume)
        return {"size": blob.ref.size, "cached_bytes": blob.table.present_bytes(on_disk),
                "fetched_bytes": blob.pmap.reload_header().fetched_bytes, "read_bytes": read,
                "hits": blob.stats.hits, "misses": blob.stats.misses,
                "blocked_seconds": round(blob.stats.blocked_seconds, 6),
                "complete": all(on_disk), "path": blob.data_path}

    def status(self) -> dict:
        view = self.registry.status(describe=self._cookie_view)
        by_name = {live.mount.name: live for live in self.mounts.values()}
        view["mounts"] = [self._mount_view(by_name[m["name"]]) for m in view["mounts"]
                          if m["name"] in by_name]
        view["daemon"] = {
            "pid": os.getpid(), "state_dir": str(self.state_dir), "socket": self.socket_path,
            "uptime_seconds": round(time.time() - self.started, 3),
            "fanotify": self.fanotify is not None,
            "fanotify_problem": self.fanotify_problem,
            "fanotify_events": self.fanotify.events if self.fanotify else 0,
            "fanotify_denied": self.fanotify.denied if self.fanotify else 0,
            "fscache": self.fscache.view() if self.fscache else None,
            "fscache_problem": self.fscache_problem,
            "rss_bytes": _rss(),
        }
        return view

    # -- stopping -------------------------------------------------------------------------

    async def stop(self, *, keep_mounts: bool) -> dict:
        """Unmount everything (refusing while a mount is busy), or keep the mounts."""
        if keep_mounts:
            return {"kept": sorted(self.mounts)}
        busy = []
        for path in sorted(self.mounts):
            try:
                await self.umount(path)
            except Busy:
                busy.append(path)
        if busy:
            raise Busy(f"still busy, left mounted: {', '.join(busy)} (close what uses them, "
                       "or stop with --keep-mounts)")
        if self.fanotify is not None:
            await self.fanotify.stop_holder()
        elif self.holder is not None:
            await self.holder.shutdown()
        return {"kept": []}


def set_readahead(mountpoint: str) -> None:
    """A generous readahead on the mount's bdi, so the kernel asks in large ranges."""
    try:
        dev = os.stat(mountpoint).st_dev
        path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
        with open(path, "w") as f:
            f.write(str(READAHEAD_KB))
    except OSError as e:
        log.info("could not set readahead on %s: %s", mountpoint, e.strerror)


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0

