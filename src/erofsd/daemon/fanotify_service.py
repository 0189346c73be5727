"""The daemon's side of the fanotify data path.

Each blob a fanotify mount uses is a cache file marked with FAN_PRE_ACCESS
on the holder's group. An event names a file and a range; the daemon
makes the range present in the cache (fetch, verify, write), then answers
FAN_ALLOW, or FAN_DENY with an errno when the bytes cannot be had: never
zeros. The daemon's own writes must not raise events in turn, so every
write to a marked blob goes through a no-notify fd: the first event's fd,
kept. A blob that becomes complete loses its mark, so warm reads never
wake the daemon.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading

import trio

from ..cache.blob import CachedBlob
from ..errors import Busy, ErofsdError
from ..paths import fanotify
from .holderlink import HolderLink

log = logging.getLogger("erofsd.fanotify")
HANDLER_THREADS = 16


class FanotifyService:
    def __init__(self, link: HolderLink) -> None:
        self.link = link
        self._by_inode: dict[tuple[int, int], CachedBlob] = {}
        self._owner_fds: dict[CachedBlob, int] = {}
        self._adopted: set[CachedBlob] = set()
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(HANDLER_THREADS)
        self.events = 0
        self.denied = 0
        self._stopping = False
        # set once the daemon has taken its mounts back: events of other processes
        # (a restarted daemon gets the pending ones at once) wait for it
        self.ready = trio.Event()

    @property
    def group(self) -> int:
        return self.link.group

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Answer every event the holder forwards, each in its own task."""
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                message, fds = await self.link.receive()
                if message is None:
                    if self._stopping:
                        return
                    raise ErofsdError("the holder went away")
                if "event" in message and fds:
                    nursery.start_soon(self._handle, message, fds[0])
                else:
                    for fd in fds:
                        os.close(fd)

    async def stop_holder(self) -> None:
        self._stopping = True
        await self.link.shutdown()

    # -- marks ------------------------------------------------------------------

    def watch(self, blob: CachedBlob) -> None:
        """Serve ``blob`` to the kernel: own it, and mark it unless it is complete."""
        with self._lock:
            if blob in self._owner_fds:
                return
            fd = os.open(blob.owner_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Busy(f"blob {blob.ref.digest} in {blob.volume} is served by another "
                           "erofsd daemon on this state directory") from None
            self._owner_fds[blob] = fd
            blob.owned = True
            st = os.stat(blob.data_path)
            self._by_inode[(st.st_dev, st.st_ino)] = blob
        blob.pmap.refresh(0, len(blob.table.entries))
        if not blob.complete:
            fanotify.mark(self.group, blob.data_path)

    def unwatch(self, blob: CachedBlob) -> None:
        with self._lock:
            fd = self._owner_fds.pop(blob, None)
            if fd is None:
                return
            self._by_inode = {k: v for k, v in self._by_inode.items() if v is not blob}
            self._adopted.discard(blob)
        try:
            fanotify.mark(self.group, blob.data_path, remove=True)
        except OSError as e:
            log.warning("could not remove the mark on %s: %s", blob.data_path, e.strerror)
        blob.owned = False
        os.close(fd)

    # -- events -----------------------------------------------------------------

    async def _handle(self, message: dict, fd: int) -> None:
        event_id = message["event"]
        allow, code = False, errno.EIO
        try:
            if message["pid"] == os.getpid():
                # Our own I/O on a marked file (a restarted daemon reopening its cache):
                # it reads present or verified bytes, or writes; nothing to fill.
                allow = True
            else:
                await self.ready.wait()
                st = os.fstat(fd)
                blob = self._by_inode.get((st.st_dev, st.st_ino))
                if blob is None:
                    log.warning("event on a file erofsd does not serve (inode %d): denied",
                                st.st_ino)
                else:
                    allow, code = await self._fill(blob, fd, message["offset"],
                                                   message["count"])
        except OSError as e:
            code = e.errno or errno.EIO
        except Exception:  # a bug: deny (never zeros), log it, and keep serving
            log.exception("fanotify event %d failed", event_id)
            code = errno.EIO
        finally:
            self.events += 1
            self.denied += not allow
            os.close(fd)
            with trio.CancelScope(shield=True):  # an event is always answered
                await self.link.send({"answer": event_id, "allow": allow, "errno": code})

    async def _fill(self, blob: CachedBlob, fd: int, offset: int, count: int
                    ) -> tuple[bool, int]:
        with self._lock:
            if blob not in self._adopted:  # writes from now on raise no events
                blob.use_fd(os.dup(fd))
                self._adopted.add(blob)
        try:
            await trio.to_thread.run_sync(blob.ensure_range, offset, offset + count,
                                          limiter=self._limiter)
        except ErofsdError as e:
            log.error("cannot fill %s bytes %d+%d: %s", blob.ref.digest, offset, count, e)
            return False, e.errno
        blob.stats.read_bytes += count
        if blob.complete:
            with self._lock:
                watched = blob in self._owner_fds
            if watched:
                fanotify.mark(self.group, blob.data_path, remove=True)
                log.info("blob %s in %s is complete: mark removed", blob.ref.digest,
                         blob.volume)
        return True, 0
