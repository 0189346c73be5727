"""A FUSE worker: the userspace EROFS reader served through pyfuse3, one mount per process.

A thin adapter: each handler turns an inode number into an image inode,
makes one library call, and fills attributes. Errors become errnos at one
boundary (``_errnos``). Reads that may fetch from a source run in a worker
thread, so the trio loop keeps serving.

The daemon (``fuse.py``) starts ``python -m erofsd.datapaths.fuse_worker
--state-dir DIR --stats-file FILE`` and writes the mount's record on its
stdin: the image reference, the pinned manifest and its digest, fsid and
domain. The worker checks the manifest against its digest, opens the image
through the same cache volume as the daemon (``images.open_resolved``),
mounts, prints "ready" (or "error ERRNO MESSAGE"), keeps a JSON file of
per-blob counters up to date, and exits when the mount goes away.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import stat
import sys

import pyfuse3
import trio

from ..cache.store import BlobCache
from ..erofs.image import Image
from ..erofs.inode import Inode
from ..errors import ErofsdError
from ..images import open_resolved
from ..oci.source import pinned_image
from ..oci.transport import Transport
from .base import Mount

TIMEOUT = 3600.0  # an image never changes: cache entries and attributes for long
_READ_THREADS = trio.CapacityLimiter(16)


def _errnos(handler):
    """Translate library errors into FUSE replies; nothing else may escape."""
    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except ErofsdError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
    return wrapper


class ErofsFuse(pyfuse3.Operations):
    """Inode numbers: the root is 1 (FUSE's rule), any other inode is its nid + 2."""

    enable_writeback_cache = False

    def __init__(self, image: Image) -> None:
        super().__init__()
        self.image = image
        self._root_nid = image.root.nid
        self._dirs: dict[int, list] = {}
        self._next_fh = 1

    def _inode(self, ino: int) -> Inode:
        return self.image.inode(self._root_nid if ino == pyfuse3.ROOT_INODE else ino - 2)

    def _ino(self, nid: int) -> int:
        return pyfuse3.ROOT_INODE if nid == self._root_nid else nid + 2

    def _attributes(self, inode: Inode) -> pyfuse3.EntryAttributes:
        st = inode.stat()
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = self._ino(inode.nid)
        attr.generation = 0
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        attr.st_mode, attr.st_nlink = st.mode, st.nlink
        attr.st_uid, attr.st_gid, attr.st_rdev = st.uid, st.gid, st.rdev
        attr.st_size = st.size
        attr.st_blksize = self.image.block_size
        attr.st_blocks = -(-st.size // 512)
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = st.mtime_ns
        return attr

    @_errnos
    async def lookup(self, parent_inode, name, ctx=None):
        entry = self.image.find(self._inode(parent_inode), bytes(name))
        return self._attributes(self.image.inode(entry.nid))

    @_errnos
    async def getattr(self, inode, ctx=None):
        return self._attributes(self._inode(inode))

    @_errnos
    async def readlink(self, inode, ctx):
        return self.image.readlink(self._inode(inode))

    @_errnos
    async def opendir(self, inode, ctx):
        entries = self.image.listdir(self._inode(inode))
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = entries
        return fh

    @_errnos
    async def readdir(self, fh, start_id, token):
        entries = self._dirs[fh]
        for index in range(start_id, len(entries)):  # offsets are stable: list positions
            entry = entries[index]
            attr = self._attributes(self.image.inode(entry.nid))
            if not pyfuse3.readdir_reply(token, entry.name, attr, index + 1):
                break

    async def releasedir(self, fh):
        self._dirs.pop(fh, None)

    @_errnos
    async def open(self, inode, flags, ctx):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        target = self._inode(inode)
        if not stat.S_ISREG(target.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    @_errnos
    async def read(self, fh, off, size):
        inode = self._inode(fh)
        if self.image.cached(inode, off, size):  # local bytes: a thread hop costs more
            return self.image.read(inode, off, size)
        return await trio.to_thread.run_sync(self.image.read, inode, off, size,
                                             limiter=_READ_THREADS)

    async def release(self, fh):
        pass

    @_errnos
    async def getxattr(self, inode, name, ctx):
        return self.image.getxattr(self._inode(inode), bytes(name))

    @_errnos
    async def listxattr(self, inode, ctx):
        return self.image.listxattr(self._inode(inode))

    @_errnos
    async def statfs(self, ctx):
        sb = self.image.superblock
        result = pyfuse3.StatvfsData()
        result.f_bsize = result.f_frsize = self.image.block_size
        result.f_blocks = sb.blocks + sum(slot.blocks for slot in self.image.slots)
        result.f_bfree = result.f_bavail = 0
        result.f_files = sb.inos
        result.f_ffree = result.f_favail = 0
        result.f_namemax = 255
        return result


def mount_options() -> set[str]:
    # libfuse negotiates reads of up to 1 MiB (max_pages) by itself; passing
    # max_read here makes libfuse 3.14 refuse the session.
    return {"fsname=erofsd", "subtype=erofs", "ro", "default_permissions", "allow_other"}


def blob_stats(blobs) -> dict:
    return {b.ref.digest: {"read_bytes": b.stats.read_bytes, "hits": b.stats.hits,
                           "misses": b.stats.misses, "blocked_seconds": b.stats.blocked_seconds}
            for b in blobs}


async def _write_stats(blobs, path: str) -> None:
    """Keep a small JSON file of per-blob counters for the daemon to read."""
    last = None
    while True:
        report = json.dumps(blob_stats(blobs))
        if report != last:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                f.write(report)
            os.replace(tmp, path)
            last = report
        await trio.sleep(1)


async def _serve(blobs, stats_path: str | None) -> None:
    async with trio.open_nursery() as nursery:
        if stats_path:
            nursery.start_soon(_write_stats, blobs, stats_path)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="erofsd-fuse-worker")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--stats-file")
    args = parser.parse_args(argv)
    transport = None
    try:
        mount = Mount.from_json(json.loads(sys.stdin.read()))  # the daemon's own record
        transport = Transport(insecure=mount.insecure)
        resolved = pinned_image(mount.image, mount.manifest.encode(), mount.manifest_digest,
                                transport=transport, mirror=mount.mirror,
                                index=mount.pinned_index)
        opened = open_resolved(resolved, BlobCache(args.state_dir), mount.volume)
    except (ErofsdError, OSError) as e:
        code = getattr(e, "errno", None) or errno.EIO
        print(f"error {code} {e}", flush=True)
        return 1
    with opened:
        pyfuse3.init(ErofsFuse(opened.image), mount.mountpoint, mount_options())
        print("ready", flush=True)
        try:
            trio.run(_serve, opened.blobs, args.stats_file)
        finally:
            pyfuse3.close(unmount=False)
            transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
