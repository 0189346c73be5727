"""The reader against images that mkfs.erofs (erofs-utils 1.5) writes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

from erofsd.erofs.image import Image
from erofsd.erofs.readat import FileReadAt
from erofsd.errors import Unsupported
from skips import requires_tool
from trees import edge_tree, random_tree
from treeutil import assert_same_tree, snapshot_dir, snapshot_image

pytestmark = requires_tool("mkfs.erofs")


def mkfs(src: Path, out: Path, *options: str) -> Path:
    result = subprocess.run(["mkfs.erofs", "--quiet", *options, str(out), str(src)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def open_raw(bootstrap: Path, *devices: Path) -> Image:
    return Image(FileReadAt(bootstrap), [FileReadAt(d) for d in devices] if devices else None)


@pytest.fixture(scope="module")
def mkfs_tree(tmp_path_factory) -> Path:
    src = edge_tree(tmp_path_factory.mktemp("edge") / "src", big_dir=10_000)
    os.unlink(os.fsencode(src / "names") + b"/" + b"n" * 255)  # mkfs.erofs 1.5 fails on it
    return src


OPTIONS = {
    "default": [],
    "chunk-4k": ["--chunksize=4096"],
    "chunk-1m": ["--chunksize=1048576"],
    "no-shared-xattrs": ["-x", "-1"],
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_reads_mkfs_image(tmp_path, mkfs_tree, name):
    image = open_raw(mkfs(mkfs_tree, tmp_path / "img", *OPTIONS[name]))
    expected = snapshot_dir(mkfs_tree)
    if name == "no-shared-xattrs":  # -x -1 drops xattrs altogether
        expected = {p: dataclasses.replace(e, xattrs=()) for p, e in expected.items()}
    assert_same_tree(snapshot_image(image), expected)


def test_reads_mkfs_fixed_timestamp(tmp_path, mkfs_tree):
    image = open_raw(mkfs(mkfs_tree, tmp_path / "img", "-T0"))
    snap = snapshot_image(image)
    assert {e.mtime_ns for e in snap.values()} == {0}
    assert not any(image.inode(e.key).record.extended for e in snap.values()
                   if e.uid < 65536 and e.gid < 65536)  # compact inodes when times agree
    assert_same_tree(snap, snapshot_dir(mkfs_tree), ignore=("mtime_ns",))


def test_reads_mkfs_blobdev(tmp_path, mkfs_tree):
    blob = tmp_path / "blob"
    bootstrap = mkfs(mkfs_tree, tmp_path / "img", "--chunksize=1048576", f"--blobdev={blob}")
    image = open_raw(bootstrap, blob)
    assert len(image.slots) == 1
    assert_same_tree(snapshot_image(image), snapshot_dir(mkfs_tree))
    # without its device, metadata still reads and data says which device is missing
    bare = open_raw(bootstrap)
    assert bare.listdir(bare.root)
    with pytest.raises(Exception, match="device 1"):
        bare.read(bare.lookup("/block_plus"), 0, 10)


@pytest.mark.parametrize("seed", [5, 6])
def test_reads_mkfs_random_trees(tmp_path, seed):
    src = random_tree(tmp_path / "src", seed, entries=300)
    blob = tmp_path / "blob"
    for options, devices in (([], ()), ([f"--blobdev={blob}", "--chunksize=65536"], (blob,))):
        image = open_raw(mkfs(src, tmp_path / "img", *options), *devices)
        assert_same_tree(snapshot_image(image), snapshot_dir(src))


def test_reads_mkfs_python_stdlib(tmp_path):
    stdlib = Path(sysconfig.get_paths()["stdlib"]) / "email"
    image = open_raw(mkfs(stdlib, tmp_path / "img"))
    assert_same_tree(snapshot_image(image), snapshot_dir(stdlib))


def test_compressed_layout_is_refused_by_name(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "text").write_bytes(b"compress me " * 10000)
    image = open_raw(mkfs(src, tmp_path / "img", "-zlz4"))
    inode = image.lookup("/text")
    assert image.stat(inode).size == 120000  # metadata still reads
    with pytest.raises(Unsupported, match="FLAT_COMPRESSION") as info:
        image.read(inode, 0, 100)
    assert info.value.errno == 95  # EOPNOTSUPP
