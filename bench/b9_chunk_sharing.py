"""B9 chunks shared in a domain: an image's second of a pair fetches only what is new.

Two pairs of images, each image built on its own (no layer in common):

- the stdlib tree and its rebuild, the same tree with 3% of its files
  changed (a line appended to every 33rd file), as a monthly rebuild of a
  base image would be;
- (full run) a Debian bookworm minbase root filesystem and a minbase +
  python3 one, each made by debootstrap on its own (cached in the bench
  folder).

For each pair a fresh daemon mounts the first image in a domain and
reads every file, then mounts the second and reads every file:

- erofsd, chunk sharing: the second in the same domain;
- layer-level sharing (what a domain did before): the second in another
  domain, so it fetches all of it, as it would with no chunk in common;
- chunk sharing with the cache on xfs (a loop device), where a local
  fill is a reflink: the same bytes fetched, and on disk only the blocks
  no other file shares;
- the ideal: the stored bytes of the second image's frames that hold a
  chunk the first does not (a frame is the unit a fetch gets), from the
  two images' chunk tables.

Bytes fetched are the second image's cookies' counts less its chunk
tables; bytes on disk its cache files' allocated blocks less those
shared with another file (FIEMAP). Bytes do not
drift, so each contender runs once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from erofsd.images import open_image

from .b8_container_start import debian_python_tree, debian_tree
from .common import Figure, stdlib_tree, tests_on_path
from .registry_setup import build_image

CHANGED_EVERY = 33  # 3% of the files
XFS_SIZE = 4 << 30  # sparse: holds the Debian pair's cache


def run(quick: bool) -> list[Figure]:
    tests_on_path()
    figures = []
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-b9-") as tmp:
        root = Path(tmp)
        rebuild = _rebuilt(stdlib_tree(quick), root / "rebuild")
        figures += _pair("stdlib and its rebuild (3% of files changed)", stdlib_tree(quick),
                         rebuild, root / "stdlib")
        if not quick:
            minbase = debian_tree("debian-minbase", [], "B9 Debian pair")
            python = debian_python_tree()
            if minbase and python:
                figures += _pair("Debian minbase, then minbase + python3, built apart",
                                 minbase, python, root / "debian")
    return figures


def _pair(what: str, first: Path, second: Path, root: Path) -> list[Figure]:
    layout = root / "layout"
    refs = [build_image(layout, name, [tree]) for name, tree in (("a", first), ("b", second))]
    ideal, second_bytes, tables = _ideal(*refs)
    found = {}
    for contender, domain in (("chunks", "d1"), ("layers", "d2"), ("reflinks", "d1")):
        with _state_dir(root, on_xfs=contender == "reflinks") as state:
            found[contender] = _second_costs(refs, domain, state, tables)
    params = {"pair": what, "second_stored_bytes": second_bytes, "ideal_bytes": ideal,
              "filled_locally_bytes": found["chunks"]["local"],
              "xfs_fetched_bytes": found["reflinks"]["fetched"],
              "xfs_reflinked_bytes": found["reflinks"]["reflinked"]}
    return [
        Figure("B9", f"{what}: bytes the second fetches, against the ideal", "B",
               found["chunks"]["fetched"], "ideal (frames with new content)", ideal, params,
               higher_is_better=False, goal="<= 1.05 x the ideal"),
        Figure("B9", f"{what}: bytes the second fetches, against layer-level sharing", "B",
               found["chunks"]["fetched"], "layer-level sharing", found["layers"]["fetched"],
               params, higher_is_better=False),
        Figure("B9", f"{what}: bytes the second keeps on disk", "B", found["chunks"]["disk"],
               "layer-level sharing", found["layers"]["disk"], params,
               higher_is_better=False),
        Figure("B9", f"{what}: bytes the second keeps on disk, cache on xfs (reflinks)", "B",
               found["reflinks"]["disk"], "ext4 (copies)", found["chunks"]["disk"], params,
               higher_is_better=False),
    ]


def _second_costs(refs: list[str], domain: str, state: Path, tables: int) -> dict:
    """Mount the first image in d1 and the second in ``domain``, read both: the second's
    bytes fetched, filled locally, reflinked, and on disk (blocks no other file shares)."""
    from daemonutil import DaemonProc
    from sharekit import shared_bytes

    with DaemonProc(state) as daemon:
        for tag, ref, dom in (("a", refs[0], "d1"), ("b", refs[1], domain)):
            view = daemon.client.mount(ref, daemon.mountpoint(tag), domain_id=dom)
            _read_tree(daemon.mountpoint(tag))
        cookies = [c for c in daemon.client.status()["cookies"]
                   if c["volume"] == f"erofs,{domain}" and c["blob"] in view["blobs"]]
        costs = {"fetched": sum(c["fetched_bytes"] for c in cookies) - tables,
                 "local": sum(c.get("filled_locally_bytes", 0) for c in cookies),
                 "reflinked": sum(c.get("reflinked_bytes", 0) for c in cookies),
                 "disk": sum(os.stat(c["path"]).st_blocks * 512 - shared_bytes(c["path"])
                             for c in cookies)}
        for tag in ("a", "b"):
            daemon.client.umount(daemon.mountpoint(tag))
    return costs


@contextlib.contextmanager
def _state_dir(root: Path, *, on_xfs: bool) -> Iterator[Path]:
    """A fresh state directory: under ``root`` (this machine's ext4), or on a fresh xfs
    with reflinks (a sparse file on a loop device), unmounted after."""
    shutil.rmtree(root / "state", ignore_errors=True)
    if not on_xfs:
        yield root / "state"
        return
    image, mountpoint = root / "xfs.img", root / "xfs"
    with open(image, "wb") as f:
        f.truncate(XFS_SIZE)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint / "state"
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
        image.unlink()


def _ideal(first: str, second: str) -> tuple[int, int, int]:
    """(stored bytes of the second's frames holding a chunk the first lacks, the second's
    stored bytes, its chunk tables' bytes)."""
    with open_image(first) as opened:
        have = {e.digest for t in opened.chunk_tables() for e in t.entries}
    with open_image(second) as opened:
        tables = opened.chunk_tables()
        ideal = sum(f.stored_length for t in tables for f in t.frames
                    if any(t.entries[i].digest not in have for i in f.chunks))
        return (ideal, sum(b.size for b in opened.manifest.blobs),
                sum(b.table_size for b in opened.manifest.blobs))


def _read_tree(root: str) -> None:
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    while f.read(1 << 20):
                        pass


def _rebuilt(tree: Path, target: Path) -> Path:
    """``tree`` rebuilt: a line appended to every 33rd file."""
    shutil.copytree(tree, target, symlinks=True)
    files = sorted(p for p in target.rglob("*") if p.is_file() and not p.is_symlink())
    for path in files[::CHANGED_EVERY]:
        with open(path, "ab") as f:
            f.write(b"\n# rebuilt\n")
    return target
