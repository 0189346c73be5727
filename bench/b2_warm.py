"""B2 warm read: a whole tree read through the mount, blobs fully cached, page cache dropped.

- the fanotify mount against a kernel EROFS mount of the very files the
  daemon serves (its bootstrap and its complete cache file) with no daemon
  in the way: the physical limit. The same files, so the same blocks of the
  disk: on a VM disk, two copies of a blob can read at speeds 1.5x apart.
  Twice: the mount made lazily, whose blob completed under it (the kernel
  decides when a file is opened whether reads of it raise pre-content
  events, so the mount's device keeps that mode after the mark is gone), and
  a second fanotify mount of the image made once the blob was complete;
- the FUSE mount against squashfuse on an uncompressed squashfs of the tree.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from erofsd.cache.store import BlobCache
from erofsd.erofs.builder import Layer
from erofsd.erofs.dirlayer import read_dir_layer
from erofsd.images import open_image
from erofsd.kernel.mount import mount_erofs
from erofsd.oci.image import build_to_layout
from erofsd.oci.reference import LayoutRef

from .common import (
    MIB,
    Figure,
    alternate,
    median,
    stdlib_tree,
    tests_on_path,
    time_stat_walk,
    time_tar,
    tree_bytes,
)


def _entries(tree: Path) -> int:
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(tree)) + 1


def run(quick: bool) -> list[Figure]:
    tests_on_path()
    from daemonutil import DaemonProc

    runs = 3 if quick else 7  # cold reads after drop_caches are the noisiest figure here
    tree = stdlib_tree(quick)
    _, size = tree_bytes(tree)
    mib = size / MIB
    figures = []
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-b2-") as tmp:
        root = Path(tmp)
        build_to_layout([Layer(*read_dir_layer(tree), str(tree))], LayoutRef(str(root / "img")),
                        chunk_size=1 << 20)
        image = f"oci:{root / 'img'}"
        with open_image(image) as opened:
            digests = [b.digest.split(":", 1)[1] for b in opened.manifest.blobs]
            bootstrap = opened.manifest.bootstrap.digest.split(":", 1)[1]
        daemon = DaemonProc(root / "daemon")
        local = root / "local"
        local.mkdir()
        squash, squash_mnt = root / "tree.sqfs", root / "squash"
        squash_mnt.mkdir()
        try:
            fan = daemon.mountpoint("fanotify")
            fuse = daemon.mountpoint("fuse")
            daemon.client.mount(image, fan, mode="fanotify", domain_id="warm")
            daemon.client.mount(image, fuse, mode="fuse", domain_id="warm-fuse")
            for mountpoint in (fan, fuse):  # fill the cache: the mount is then warm
                time_tar(mountpoint)
            again = daemon.mountpoint("fanotify-again")  # the blob is complete: no mark
            daemon.client.mount(image, again, mode="fanotify", domain_id="warm", fsid="again")
            volume = next(v for v in BlobCache(daemon.state).list() if v.volume == "erofs,warm")
            mount_erofs(str(daemon.state / "bootstraps" / bootstrap), str(local),
                        [str(Path(volume.path) / d) for d in digests])
            subprocess.run(["mksquashfs", str(tree), str(squash), "-noI", "-noId", "-noD",
                            "-noF", "-noX", "-quiet", "-no-progress"], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["squashfuse", str(squash), str(squash_mnt)], check=True)
            ours, complete, peer = alternate(runs, lambda: time_tar(fan),
                                             lambda: time_tar(again),
                                             lambda: time_tar(str(local)))
            params = {"data": "stdlib", "bytes": size, "runs": runs}
            figures.append(Figure("B2", "warm read, fanotify mount", "MiB/s",
                                  mib / median(ours), "kernel EROFS on the same files",
                                  mib / median(peer), params, goal=">= 0.95"))
            figures.append(Figure("B2", "warm read, fanotify mount made over a complete blob",
                                  "MiB/s", mib / median(complete),
                                  "kernel EROFS on the same files", mib / median(peer),
                                  params, goal=">= 0.95"))
            ours, peer = alternate(runs, lambda: time_tar(fuse),
                                   lambda: time_tar(str(squash_mnt)))
            figures.append(Figure("B2", "warm read, FUSE mount", "MiB/s", mib / median(ours),
                                  "squashfuse (uncompressed)", mib / median(peer), params,
                                  goal=">= 1.0"))
            ours, peer = alternate(runs, lambda: time_stat_walk(fuse),
                                   lambda: time_stat_walk(str(squash_mnt)))
            figures.append(Figure("B2", "stat walk, FUSE mount", "s", median(ours),
                                  "squashfuse (uncompressed)", median(peer),
                                  {**params, "entries": _entries(tree)},
                                  higher_is_better=False, goal=">= 1.0"))
        finally:
            for point in (local, squash_mnt):
                subprocess.run(["umount", "-l", str(point)], stderr=subprocess.DEVNULL)
            daemon.cleanup()
    return figures

