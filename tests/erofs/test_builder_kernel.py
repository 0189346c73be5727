"""Builder output checked by the real thing: fsck.erofs and the host kernel's EROFS."""

from __future__ import annotations

import subprocess
import sysconfig
from pathlib import Path

import pytest

from builds import build_layers, kernel_files, kernel_mounted
from erofsd.erofs.builder import Layer, build
from erofsd.erofs.codec import Compression
from erofsd.erofs.dirlayer import read_dir_layer
from erofsd.images import open_image
from erofsd.oci.image import ErofsdManifest
from erofsd.oci.layout import OciLayout
from skips import requires_kernel, requires_tool
from trees import edge_tree, layer_family, random_tree
from treeutil import assert_same_tree, expected_merge, snapshot_dir, snapshot_image


def _paths(layout_dir: Path, tag: str = "latest") -> tuple[str, list[str]]:
    """The files the kernel takes: an uncompressed image's own, else exported beside it."""
    layout = OciLayout.open(layout_dir)
    desc = layout.resolve(tag)
    manifest = ErofsdManifest.parse(layout.read_blob(desc.digest), desc.digest)
    if any(b.compressed for b in manifest.blobs):
        return kernel_files(f"oci:{layout_dir}:{tag}", layout_dir.with_name("kernel-files"))
    return (str(layout.blob_path(manifest.bootstrap.digest)),
            [str(layout.blob_path(b.digest)) for b in manifest.blobs])


def _fsck(bootstrap: str, devices: list[str]) -> None:
    args = ["fsck.erofs", *[f"--device={d}" for d in devices], bootstrap]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def check_build(layer_dirs: list[Path], out: Path, *, chunk_size: int = 1 << 20,
                expected=None, compression: Compression | None = Compression()) -> None:
    """Build, then: fsck passes, the kernel mount and our reader both equal the source."""
    build_layers(layer_dirs, out, chunk_size=chunk_size, compression=compression)
    expected = expected if expected is not None else expected_merge([str(d) for d in layer_dirs])
    bootstrap, devices = _paths(out)
    _fsck(bootstrap, devices)
    with open_image(f"oci:{out}") as opened:
        assert_same_tree(snapshot_image(opened.image), expected)
    with kernel_mounted(bootstrap, devices) as mnt:
        assert_same_tree(snapshot_dir(mnt), expected)


@requires_kernel
@requires_tool("fsck.erofs")
def test_edge_tree_single_layer(tmp_path):
    src = edge_tree(tmp_path / "src")
    check_build([src], tmp_path / "img", expected=snapshot_dir(src))


@requires_kernel
@requires_tool("fsck.erofs")
@pytest.mark.parametrize("seed, compression", [
    (1, Compression()), (2, Compression(level=1, frame_size=0)), (3, None)])
def test_random_trees(tmp_path, seed, compression):
    src = random_tree(tmp_path / "src", seed, entries=250)
    check_build([src], tmp_path / "img", expected=snapshot_dir(src), compression=compression)


@requires_kernel
@requires_tool("fsck.erofs")
@pytest.mark.parametrize("chunk_size", [4096, 65536])
def test_small_chunk_sizes(tmp_path, chunk_size):
    src = random_tree(tmp_path / "src", 11, entries=120)
    check_build([src], tmp_path / "img", chunk_size=chunk_size, expected=snapshot_dir(src))


@requires_kernel
@requires_tool("fsck.erofs")
def test_layers_whiteouts_and_opaque_dirs(tmp_path):
    layers = layer_family(tmp_path / "layers")
    expected = expected_merge([str(d) for d in layers])
    # the reference merge itself behaves as OCI says
    assert b"/gone" not in expected and b"/gonedir/inner" not in expected
    assert b"/opq/x" not in expected and b"/opq/z" in expected
    assert [p for p in expected if p.startswith(b"/data/")] == [b"/data/only"]
    assert b"/swap_f2d" not in expected and expected[b"/swap_d2f"].size == 10
    assert expected[b"/hl2"].nlink == 1 and expected[b"/l2h1"].links == (b"/l2h1", b"/l2h2")
    assert not any(b".wh." in p for p in expected)
    check_build(layers, tmp_path / "img", expected=expected)


@requires_kernel
@requires_tool("fsck.erofs")
def test_ten_thousand_entry_directory_and_edges(tmp_path):
    src = edge_tree(tmp_path / "src", big_dir=10_000)
    check_build([src], tmp_path / "img", expected=snapshot_dir(src))


@requires_kernel
@requires_tool("fsck.erofs")
def test_real_content_python_stdlib(tmp_path):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    layers = [stdlib / "json", stdlib / "email", stdlib / "asyncio"]
    for layer in layers:
        assert layer.is_dir()
    # every layer's tree lands at the root: the merge is the union of their names
    check_build(layers, tmp_path / "img")


@requires_kernel
@requires_tool("fsck.erofs")
def test_file_past_4_gib_needs_extended_inode(tmp_path):
    """Size > 2^32 forces an extended inode; reading past 4 GiB must map right.

    Only the bytes that matter are compared (the tail and samples of the
    hole): hashing 5 GiB of zeros three times would only test patience.
    """
    src = tmp_path / "src"
    src.mkdir()
    tail_at, tail = (5 << 30) + 12345, b"tail bytes past 4 GiB"
    with open(src / "huge", "wb") as f:
        f.seek(tail_at)
        f.write(tail)
    build_layers([src], tmp_path / "img")
    bootstrap, devices = _paths(tmp_path / "img")
    _fsck(bootstrap, devices)
    size = tail_at + len(tail)
    samples = [0, 1 << 30, (4 << 30) - 10, tail_at - 4096]
    with open_image(f"oci:{tmp_path / 'img'}") as opened:
        img = opened.image
        inode = img.lookup("/huge")
        assert inode.record.extended and inode.size == size
        assert img.read(inode, tail_at - 3, 100) == bytes(3) + tail
        assert all(img.read(inode, at, 4096) == bytes(4096) for at in samples)
        last_chunk = size % (1 << 20)  # only the last chunk holds data; it is stored padded
        assert opened.manifest.blobs[0].data_size == -(-last_chunk // 4096) * 4096
    with kernel_mounted(bootstrap, devices) as mnt, open(mnt / "huge", "rb") as f:
        assert (mnt / "huge").stat().st_size == size
        f.seek(tail_at - 3)
        assert f.read(100) == bytes(3) + tail
        for at in samples:
            f.seek(at)
            assert f.read(4096) == bytes(4096)


@requires_kernel
@pytest.mark.parametrize("block_size", [512, 1024])
def test_small_block_images_mount_and_read_back(tmp_path, block_size):
    """512-byte blocks (Linux 6.4+) are what tar index images use; the reader must take them.

    For blocks of 1 KiB or less the superblock checksum covers a whole block
    from byte 1024, not the rest of the first block.
    """
    src = edge_tree(tmp_path / "src")
    tree, contents = read_dir_layer(src)
    result = build([Layer(tree, contents, str(src))], str(tmp_path), chunk_size=4096,
                   block_size=block_size, compression=None)  # a raw blob: the kernel's bytes
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_bytes(result.bootstrap)
    blob = result.blobs[0].path
    expected = snapshot_dir(src)
    with open_image(str(bootstrap), [blob]) as opened:
        assert opened.image.block_size == block_size
        assert_same_tree(snapshot_image(opened.image), expected)
    with kernel_mounted(str(bootstrap), [blob]) as mnt:
        assert_same_tree(snapshot_dir(mnt), expected)
