"""The daemon's core: mount and unmount images in domains, over any data path.

A mount is always the same five steps, whatever the data path:

1. claim the mount point (absolute, a directory, not a mount point already,
   not in or over the daemon's state directory);
2. resolve the image and pin its manifest, and keep its verified bootstrap;
3. register the mount in the domain registry, which opens or shares one
   cached blob per (volume, blob);
4. ask the data path to attach it (``datapaths/``);
5. record it on disk (with its manifest), so a restarted daemon adopts it
   without the network.

Anything that fails part-way is undone, last step first. Unmounting asks
the data path to detach, then lets go of the registration and the
bootstrap, then forgets the record.

Stopping: ``stop`` unmounts every mount and refuses while one is busy;
``stop --keep-mounts`` (and SIGTERM for busy mounts) leaves mounts in place
for the next daemon: FUSE workers keep serving, and fanotify reads of
uncached bytes wait in the holder until a daemon answers them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from concurrent.futures import wait
from pathlib import Path

import trio

from ..cache.blob import CachedBlob
from ..cache.fill import BackgroundFill
from ..cache.store import BlobCache
from ..datapaths.base import DataPath, Mount
from ..datapaths.fanotify import FanotifyPath
from ..datapaths.fscache import FscachePath
from ..datapaths.fuse import FusePath
from ..datapaths.holderlink import HolderLink
from ..domain import DomainRegistry, default_fsid, volume_of
from ..errors import Busy, ErofsdError, InvalidArgument, NotADirectory, NotFound
from ..images import cached_bootstrap
from ..kernel.mount import is_mount_point, mounted_filesystems
from ..oci.indexed import image_manifest, with_index
from ..oci.source import ResolvedImage, SourcedBlob, pinned_image, resolve_image
from ..oci.transport import Transport
from ..pools import process_pool
from .mounttable import MountTable
from .protocol import MountRequest

log = logging.getLogger("erofsd.daemon")
AUTO_ORDER = ("fanotify", "fscache", "fuse")  # what --mode auto tries, in turn
PATH_CLASSES = {"fanotify": FanotifyPath, "fscache": FscachePath, "fuse": FusePath}


class Daemon:
    def __init__(self, state_dir: str | os.PathLike, socket_path: str, *,
                 cache_max_size: int | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.socket_path = socket_path
        daemon_dir = self.state_dir / "daemon"
        daemon_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_path = str(daemon_dir / "daemon.log")
        self.cache = BlobCache(self.state_dir)
        self.registry = DomainRegistry(self._open_cookie, self._close_cookie)
        self.table = MountTable(daemon_dir / "mounts.json")
        self.unavailable: dict[str, str] = {}  # data path -> why it cannot run here
        self.holder: HolderLink | None = None
        self.paths: dict[str, DataPath] = {}
        for name in AUTO_ORDER:
            problem = PATH_CLASSES[name].problem()
            if problem:
                self.unavailable[name] = problem
            else:
                self.paths[name] = self._make_path(name)
        self.mounts: dict[str, Mount] = {}
        self._busy: set[str] = set()
        self._transports = {False: Transport(), True: Transport(insecure=True)}
        self.started = time.time()
        self.ready = trio.Event()  # set once every recorded mount is taken back
        self.cache_max_size = cache_max_size
        self.evicted: list[str] = []  # what the cache limit removed, newest last (status)
        self._cache_check = trio.Event()  # a mount went: the cache may be over its limit

    def _make_path(self, name: str) -> DataPath:
        if name == "fuse":
            return FusePath(self.state_dir, self.log_path)
        if self.holder is None:  # the kernel paths keep their fds in the holder
            self.holder = HolderLink(str(self.state_dir / "daemon" / "holder.sock"),
                                     self.log_path)
        if name == "fanotify":
            return FanotifyPath(self.holder)
        return FscachePath(self.holder, self.cache, self.state_dir)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Reach the holder, start every data path, take the recorded mounts back."""
        if self.holder is not None:
            await self.holder.connect()
        for path in self.paths.values():  # first: adopting mounts raises events too
            await path.start(nursery)
        await self._restore()
        for path in self.paths.values():
            await path.resume()
        self.ready.set()

    async def stop(self, *, keep_mounts: bool) -> dict:
        """Unmount everything (refusing while a mount is busy), or keep the mounts.

        Kept mounts keep the holder too: it has the kernel's fds for the next daemon.
        """
        if keep_mounts:
            for mount in self.mounts.values():  # the next daemon takes the fills back too
                if mount.fill is not None:
                    await trio.to_thread.run_sync(mount.fill.stop)
            self.table.close()
            return {"kept": sorted(self.mounts)}
        busy = []
        for point in sorted(self.mounts):
            try:
                await self.umount(point)
            except Busy:
                busy.append(point)
        if busy:
            raise Busy(f"still busy, left mounted: {', '.join(busy)} (close what uses them, "
                       "or stop with --keep-mounts)")
        for path in self.paths.values():
            await path.stop()
        if self.holder is not None:
            await self.holder.shutdown()
        self.table.close()
        return {"kept": []}

    async def keep_cache_under(self, max_size: int, period: float = 60.0) -> None:
        """The cache limit: unreferenced blobs go, least recently used first, when over it.

        Checked every ``period`` seconds and after every unmount; a blob any
        process has open is never removed (``BlobCache.gc``).
        """
        while True:
            report = await trio.to_thread.run_sync(self.cache.gc, max_size)
            if report.removed:
                log.info("cache over %d bytes: removed %d blob(s), freed %d bytes", max_size,
                         len(report.removed), report.freed_bytes)
                self.evicted = (self.evicted + report.removed)[-100:]
            with trio.move_on_after(period):
                await self._cache_check.wait()
            self._cache_check = trio.Event()

    # -- cookies (called by the registry, in threads) ------------------------------

    def _open_cookie(self, volume: str, blob: SourcedBlob) -> CachedBlob:
        return self.cache.acquire(volume, blob.ref, [blob.source])

    def _close_cookie(self, blob: CachedBlob) -> None:
        self.cache.release(blob)

    # -- mount ---------------------------------------------------------------------

    def data_path(self, mode: str) -> DataPath:
        if mode == "auto":
            for name in AUTO_ORDER:
                if name in self.paths:
                    return self.paths[name]
            raise InvalidArgument("no data path works here: " + "; ".join(
                f"{name}: {problem}" for name, problem in self.unavailable.items()),
                errno=errno.EOPNOTSUPP)
        if mode not in self.paths:
            problem = self.unavailable.get(mode, "unknown mode")
            raise InvalidArgument(f"{mode} mode is not available here: {problem}",
                                  errno=errno.EOPNOTSUPP)
        return self.paths[mode]

    async def mount(self, request: MountRequest) -> dict:
        path = self.data_path(request.mode)
        if request.prefetch and not path.fills_through_cache:
            raise InvalidArgument(f"prefetch is not available in {path.name} mode: the kernel "
                                  "fills its own cache there", errno=errno.EOPNOTSUPP)
        if request.index and not path.small_blocks:
            raise InvalidArgument(f"an ordinary image's index (512-byte blocks) cannot be "
                                  f"mounted in {path.name} mode: use fanotify or fuse, or "
                                  "convert the image", errno=errno.EOPNOTSUPP)
        point = self._claim(request.mountpoint)
        try:
            transport = self._transports[request.insecure]
            resolved = await trio.to_thread.run_sync(
                lambda: _resolve(request, transport))
            manifest = image_manifest(resolved)
            mount = Mount(
                mountpoint=point, image=request.image,
                fsid=request.fsid or default_fsid(manifest.bootstrap.digest),
                domain_id=request.domain_id, mode=path.name,
                manifest=resolved.manifest.decode(), manifest_digest=resolved.digest,
                insecure=request.insecure, mirror=request.mirror, prefetch=request.prefetch,
                index_manifest=resolved.index.manifest.decode() if resolved.index else None,
                index_digest=resolved.index.digest if resolved.index else None)
            await self._serve(mount, path, resolved, adopt=False)
        finally:
            self._busy.discard(point)
        log.info("mounted %s at %s as %s (mode %s)", request.image, point, mount.name,
                 mount.mode)
        return self._mount_view(mount)

    def _claim(self, mountpoint: str) -> str:
        if not os.path.isabs(mountpoint):
            raise InvalidArgument(f"mount point must be an absolute path: {mountpoint}")
        point = os.path.realpath(mountpoint)
        if not os.path.exists(point):
            raise NotFound(f"mount point {point} does not exist")
        if not os.path.isdir(point):
            raise NotADirectory(f"mount point {point} is not a directory")
        state = str(self.state_dir)
        if point == state or point.startswith(state + "/"):
            raise InvalidArgument(f"mount point {point} is inside the daemon's state "
                                  f"directory {state}")
        if state.startswith(point.rstrip("/") + "/"):
            raise InvalidArgument(f"mount point {point} would hide the daemon's state "
                                  f"directory {state}")
        if point in self._busy or point in self.mounts or is_mount_point(point):
            raise Busy(f"{point} is already a mount point (or being mounted)")
        self._busy.add(point)
        return point

    async def _serve(self, mount: Mount, path: DataPath, resolved: ResolvedImage, *,
                     adopt: bool) -> None:
        """Bootstrap, registration, data path, record; undone in reverse on failure."""
        mount.source = resolved.source
        async with contextlib.AsyncExitStack() as undo:
            await trio.to_thread.run_sync(self._keep_and_register, mount, resolved)
            undo.callback(os.close, mount.bootstrap_fd)
            undo.push_async_callback(self._unregister, mount)
            await (path.adopt(mount) if adopt else path.attach(mount))
            self.mounts[mount.mountpoint] = mount
            self.table.add(mount)
            undo.pop_all()
        if mount.prefetch:  # after a restart too: what is present already is skipped
            mount.fill = BackgroundFill(mount.cached_blobs())

    def _keep_and_register(self, mount: Mount, resolved: ResolvedImage) -> None:
        """The bootstrap kept while the registration opens the blobs (two fetches at
        once for a new image); whichever fails, the other is undone."""
        kept = process_pool("erofsd-bootstrap", 4).submit(
            cached_bootstrap, self.cache, resolved, mount.erofsd_manifest)
        try:
            mount.registration = self.registry.register(mount.fsid, mount.domain_id,
                                                        mount.sourced_blobs())
        except BaseException:
            wait([kept])
            if kept.exception() is None:
                os.close(kept.result()[1])
            raise
        try:
            mount.bootstrap_path, mount.bootstrap_fd = kept.result()
        except BaseException:
            self.registry.unregister(mount.registration)
            raise

    async def _unregister(self, mount: Mount) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.registry.unregister, mount.registration)

    # -- unmount --------------------------------------------------------------------

    async def umount(self, mountpoint: str, *, lazy: bool = False) -> dict:
        point = os.path.realpath(mountpoint)
        mount = self.mounts.get(point)
        if mount is None:
            raise NotFound(f"{point} is not mounted by erofsd")
        if point in self._busy:
            raise Busy(f"{point} is being mounted or unmounted")
        self._busy.add(point)
        try:
            await self.paths[mount.mode].detach(mount, lazy=lazy)
            if mount.fill is not None:  # before its blobs close
                await trio.to_thread.run_sync(mount.fill.stop)
            await self._unregister(mount)
            os.close(mount.bootstrap_fd)
            del self.mounts[point]
            self.table.remove(point)
            self._cache_check.set()
        finally:
            self._busy.discard(point)
        log.info("unmounted %s (%s)", point, mount.name)
        return {"mountpoint": point, "name": mount.name}

    # -- restore after a restart ------------------------------------------------------

    async def _restore(self) -> None:
        present = mounted_filesystems()
        for mount in self.table.load():
            path = self.paths.get(mount.mode)
            if path is None:
                log.error("cannot take %s back: %s mode is not available here (%s)",
                          mount.mountpoint, mount.mode, self.unavailable.get(mount.mode))
                continue
            if not path.still_mounted(present.get(mount.mountpoint)):
                log.warning("%s is no longer mounted; forgetting it", mount.mountpoint)
                continue
            try:
                pinned = pinned_image(mount.image, mount.manifest.encode(),
                                      mount.manifest_digest,
                                      transport=self._transports[mount.insecure],
                                      mirror=mount.mirror, index=mount.pinned_index)
                await self._serve(mount, path, pinned, adopt=True)
            except (ErofsdError, OSError) as e:
                log.error("cannot take %s back: %s", mount.mountpoint, e)
                continue
            log.info("took back %s (%s, mode %s)", mount.mountpoint, mount.name, mount.mode)
        self.table.save(list(self.mounts.values()))  # the forgotten ones go

    # -- views -------------------------------------------------------------------------

    def _mount_view(self, mount: Mount) -> dict:
        return {"name": mount.name, "fsid": mount.fsid, "domain_id": mount.domain_id,
                "volume": mount.volume, "blobs": mount.registration.blobs,
                "mountpoint": mount.mountpoint, "mode": mount.mode, "image": mount.image,
                "manifest_digest": mount.manifest_digest, "index": mount.index_digest,
                "prefetch": mount.prefetch,
                "prefetching": mount.fill is not None and mount.fill.running,
                **self.paths[mount.mode].describe(mount)}

    def _reads_elsewhere(self) -> dict[tuple[str, str], int]:
        """(volume, blob) -> bytes read in other processes (FUSE workers), for status."""
        reads: dict[tuple[str, str], int] = {}
        for mount in self.mounts.values():
            for digest, stats in self.paths[mount.mode].blob_stats(mount).items():
                key = (mount.volume, digest)
                reads[key] = reads.get(key, 0) + stats.get("read_bytes", 0)
        return reads

    @staticmethod
    def _cookie_view(blob: CachedBlob, reads_elsewhere: dict[tuple[str, str], int]) -> dict:
        on_disk = blob.pmap.read_disk()
        read = blob.stats.read_bytes + reads_elsewhere.get((blob.volume, blob.ref.digest), 0)
        header = blob.pmap.reload_header()  # lifetime counts, every process's
        return {"size": blob.ref.size, "data_size": blob.ref.data_size,
                "compressed": blob.ref.compressed,
                "cached_bytes": blob.table.present_bytes(on_disk),
                "fetched_bytes": header.fetched_bytes, "read_bytes": read,
                "filled_locally_bytes": header.local_bytes,
                "reflinked_bytes": header.reflinked_bytes,
                "hits": blob.stats.hits, "misses": blob.stats.misses,
                "blocked_seconds": round(blob.stats.blocked_seconds, 6),
                "complete": all(on_disk), "path": blob.data_path}

    def status(self) -> dict:
        elsewhere = self._reads_elsewhere()
        view = self.registry.status(describe=lambda blob: self._cookie_view(blob, elsewhere))
        daemon = {
            "pid": os.getpid(), "state_dir": str(self.state_dir), "socket": self.socket_path,
            "state": "ready" if self.ready.is_set() else "starting",
            "uptime_seconds": round(time.time() - self.started, 3),
            "modes": {name: {"available": name in self.paths,
                             "problem": self.unavailable.get(name)} for name in AUTO_ORDER},
            "fanotify": "fanotify" in self.paths,
            "fanotify_problem": self.unavailable.get("fanotify"),
            "fanotify_events": 0, "fanotify_denied": 0,
            "fscache": None,
            "fscache_problem": self.unavailable.get("fscache"),
            "rss_bytes": _rss(),
            "cache_max_size": self.cache_max_size,
            "cache_evicted": list(self.evicted),
        }
        for path in self.paths.values():
            daemon.update(path.status())
        mounts = [self._mount_view(m) for m in sorted(self.mounts.values(), key=lambda m: m.name)]
        return {"mounts": mounts, "domains": _with_totals(view["domains"], view["cookies"]),
                "cookies": view["cookies"], "daemon": daemon}


TOTALS = ("fetched_bytes", "filled_locally_bytes", "reflinked_bytes")


def _with_totals(domains: list[dict], cookies: list[dict]) -> list[dict]:
    """Each domain with its cookies' fetched and locally filled bytes added up."""
    for domain in domains:
        volume = volume_of(domain["domain_id"], "")
        for field in TOTALS:
            domain[field] = sum(c.get(field, 0) for c in cookies if c["volume"] == volume)
    return domains


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _resolve(request: MountRequest, transport: Transport) -> ResolvedImage:
    """The image a mount request names, through the index it names (if any)."""
    resolved = resolve_image(request.image, transport=transport, mirror=request.mirror)
    return with_index(resolved, request.index) if request.index else resolved
