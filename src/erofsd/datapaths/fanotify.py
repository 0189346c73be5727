"""The fanotify data path: kernel EROFS on the cache files, filled on pre-content events.

Each blob a fanotify mount uses is a cache file marked with FAN_PRE_ACCESS
on the holder's group, and the kernel mounts the bootstrap file-backed with
``device=<cache file>`` per blob. An event names a file and a range; the
daemon makes the range present in the cache (fetch, verify, write), then
answers FAN_ALLOW, or FAN_DENY with an errno when the bytes cannot be had:
never zeros. The daemon's own writes must not raise events in turn, so every
write to a marked blob goes through a no-notify fd: the first event's fd,
kept. A blob that becomes complete loses its mark, so warm reads never
wake the daemon. Mounts in one domain name the same cache files, so a mark
is shared: it is taken by the first mount of a blob and dropped by the last.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import queue
import threading
from typing import ClassVar

import trio

from ..cache.blob import CachedBlob
from ..errors import Busy, ErofsdError, InvalidArgument
from ..kernel import fanotify
from ..kernel.mount import mount_erofs
from .base import DataPath, Mount, unmount
from .holderlink import HolderLink

log = logging.getLogger("erofsd.fanotify")
HANDLER_THREADS = 16


@dataclasses.dataclass
class _Watch:
    """A blob this daemon serves: the mounts using it, its owner lock, its inode."""

    users: int
    owner_fd: int  # an exclusive flock: one daemon serves a cache file
    inode: tuple[int, int]
    quiet: bool = False  # writes go through a no-notify fd (the first event's)


class FanotifyPath(DataPath):
    name: ClassVar[str] = "fanotify"

    def __init__(self, link: HolderLink) -> None:
        self.link = link
        self._watches: dict[CachedBlob, _Watch] = {}
        self._inodes: dict[tuple[int, int], CachedBlob] = {}
        self._lock = threading.Lock()
        # Events are handled on these threads from start to answer: the event loop
        # only receives them (a miss's cost is mostly hand-offs between loop and threads)
        self._events: queue.SimpleQueue[tuple[dict, int]] = queue.SimpleQueue()
        self.events = 0
        self.denied = 0
        self._stopping = False
        # set once the daemon has taken its mounts back: events of other processes
        # (a restarted daemon gets the pending ones at once) wait for it
        self._resumed = threading.Event()

    @staticmethod
    def problem() -> str | None:
        return fanotify.supported()

    # -- the interface ----------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        # daemon threads: a daemon that stops does not wait for a fetch in flight (its
        # event stays with the holder, for the next daemon)
        for _ in range(HANDLER_THREADS):
            threading.Thread(target=self._handler, name="erofsd-event", daemon=True).start()
        await nursery.start(self._serve)

    def still_mounted(self, fstype: str | None) -> bool:
        return fstype == "erofs"

    async def attach(self, mount: Mount) -> None:
        await trio.to_thread.run_sync(self._watch_and_mount, mount, True)

    async def adopt(self, mount: Mount) -> None:
        await trio.to_thread.run_sync(self._watch_and_mount, mount, False)

    def _watch_and_mount(self, mount: Mount, kernel_mount: bool) -> None:
        """Watch every blob of ``mount``, then mount it: one thread hop for the lot
        (a mount's cost is mostly hops between the event loop and threads)."""
        watched = []
        try:
            for blob in mount.cached_blobs():
                self._watch(blob)
                watched.append(blob)
            if kernel_mount:
                mount_erofs(mount.bootstrap_path, mount.mountpoint,
                            [blob.data_path for blob in watched])
        except BaseException:
            for blob in watched:
                self._unwatch(blob)
            raise

    async def resume(self) -> None:
        self._resumed.set()

    async def detach(self, mount: Mount, *, lazy: bool) -> None:
        if lazy:
            raise InvalidArgument("a fanotify mount cannot be detached lazily: its readers "
                                  "need the daemon until they close their files")
        await unmount(mount.mountpoint)
        self._unwatch_all(mount)

    def status(self) -> dict:
        return {"fanotify_events": self.events, "fanotify_denied": self.denied}

    async def stop(self) -> None:
        self._stopping = True  # the holder going away is no longer an error

    # -- marks ------------------------------------------------------------------

    def _watch(self, blob: CachedBlob) -> None:
        """Serve ``blob`` to the kernel: own it, and mark it unless it is complete."""
        with self._lock:
            watch = self._watches.get(blob)
            if watch is not None:
                watch.users += 1
                return
            fd = os.open(blob.owner_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Busy(f"blob {blob.ref.digest} in {blob.volume} is served by another "
                           "erofsd daemon on this state directory") from None
            st = os.stat(blob.data_path)
            self._watches[blob] = _Watch(1, fd, (st.st_dev, st.st_ino))
            self._inodes[(st.st_dev, st.st_ino)] = blob
            blob.owned = True
        blob.pmap.refresh(0, len(blob.table.entries))
        if not blob.complete:
            try:
                fanotify.mark(self.link.group, blob.data_path)
            except BaseException:
                self._unwatch(blob)
                raise

    def _unwatch_all(self, mount: Mount) -> None:
        for blob in mount.cached_blobs():
            self._unwatch(blob)

    def _unwatch(self, blob: CachedBlob) -> None:
        with self._lock:
            watch = self._watches.get(blob)
            if watch is None:
                return
            watch.users -= 1
            if watch.users > 0:
                return
            del self._watches[blob]
            del self._inodes[watch.inode]
        try:
            fanotify.mark(self.link.group, blob.data_path, remove=True)
        except OSError as e:
            log.warning("could not remove the mark on %s: %s", blob.data_path, e.strerror)
        blob.owned = False
        os.close(watch.owner_fd)

    # -- events -----------------------------------------------------------------

    async def _serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Hand every event the holder forwards to a handler thread."""
        task_status.started()
        while True:
            message, fds = await self.link.receive()
            if message is None:
                if self._stopping:
                    return
                raise ErofsdError("the holder went away")
            if "event" in message and fds and message.get("pid") == os.getpid():
                # Our own I/O on a marked file (a restarted daemon reopening its cache):
                # it reads present or verified bytes, or writes; nothing to fill, and
                # no handler thread to wait for (they may be the ones doing that I/O)
                os.close(fds[0])
                with self._lock:
                    self.events += 1
                await self.link.send({"answer": message["event"], "allow": True, "errno": 0})
            elif "event" in message and fds:
                self._events.put((message, fds[0]))
            else:
                for fd in fds:
                    os.close(fd)

    def _handler(self) -> None:
        while True:
            message, fd = self._events.get()
            while not self._resumed.wait(0.5):
                if self._stopping:  # never answered: the holder keeps it for the next one
                    os.close(fd)
                    return
            self._handle(message, fd)

    def _handle(self, message: dict, fd: int) -> None:
        """One event, on a handler thread: fill the range, then always answer."""
        event_id = message["event"]
        allow, code = False, errno.EIO
        try:
            st = os.fstat(fd)
            blob = self._inodes.get((st.st_dev, st.st_ino))
            if blob is None:
                log.warning("event on a file erofsd does not serve (inode %d): denied",
                            st.st_ino)
            else:
                allow, code = self._fill(blob, fd, message["offset"], message["count"])
        except OSError as e:
            code = e.errno or errno.EIO
        except Exception:  # a bug: deny (never zeros), log it, and keep serving
            log.exception("fanotify event %d failed", event_id)
            code = errno.EIO
        finally:
            with self._lock:
                self.events += 1
                self.denied += not allow
            os.close(fd)
            try:
                self.link.send_from_thread({"answer": event_id, "allow": allow,
                                            "errno": code})
            except (OSError, ErofsdError) as e:  # the holder went: the next daemon gets it
                log.warning("cannot answer fanotify event %d: %s", event_id, e)

    def _fill(self, blob: CachedBlob, fd: int, offset: int, count: int) -> tuple[bool, int]:
        with self._lock:
            watch = self._watches.get(blob)
            if watch is not None and not watch.quiet:  # writes from now on raise no events
                blob.use_fd(os.dup(fd))
                watch.quiet = True
        try:
            blob.ensure_range(offset, offset + count)
        except ErofsdError as e:
            log.error("cannot fill %s bytes %d+%d: %s", blob.ref.digest, offset, count, e)
            return False, e.errno
        blob.stats.read_bytes += count
        if blob.complete:
            with self._lock:
                watched = blob in self._watches
            if watched:
                fanotify.mark(self.link.group, blob.data_path, remove=True)
                log.info("blob %s in %s is complete: mark removed", blob.ref.digest,
                         blob.volume)
        return True, 0
