"""Hostile and broken images: a typed error every time, never a hang or a crash.

Hand-made corruptions aim at one check each (the superblock checksum is
recomputed so the damage reaches the deeper code); hypothesis then mutates
real images (ours and mkfs.erofs's) at random and drives every operation.
"""

from __future__ import annotations

import contextlib
import signal
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builds import build_layers
from erofsd.erofs.image import Image
from erofsd.erofs.mapping import resolve_device
from erofsd.erofs.ondisk import (
    DIRENT,
    INODE_EXTENDED,
    SUPER_OFFSET,
    DeviceSlot,
    InodeRecord,
    superblock_checksum,
)
from erofsd.erofs.readat import BytesReadAt
from erofsd.errors import ChecksumMismatch, CorruptImage, ErofsdError, Unsupported
from erofsd.images import open_image


@pytest.fixture(scope="module")
def small_image(tmp_path_factory) -> tuple[bytes, list[bytes]]:
    base = tmp_path_factory.mktemp("corrupt")
    src = base / "src"
    (src / "sub" / "inner").mkdir(parents=True)
    (src / "file").write_bytes(b"data " * 3000)
    (src / "sub" / "f").write_bytes(b"x" * 70000)
    (src / "sub" / "inner" / "g").write_bytes(b"g")
    (src / "link").symlink_to("file")
    import os
    os.setxattr(src / "file", "user.k", b"v")
    build_layers([src], base / "img", compression=None)  # blobs that are the kernel's bytes
    with open_image(f"oci:{base / 'img'}") as opened:
        manifest = opened.manifest
        layout_blobs = base / "img" / "blobs" / "sha256"
        bootstrap = (layout_blobs / manifest.bootstrap.digest[7:]).read_bytes()
        blobs = [(layout_blobs / b.digest[7:]).read_bytes() for b in manifest.blobs]
    return bootstrap, blobs


def rechecksum(data: bytearray) -> bytes:
    sum_at = SUPER_OFFSET + 4
    data[sum_at:sum_at + 4] = superblock_checksum(bytes(data[SUPER_OFFSET:4096])).to_bytes(4,
                                                                                          "little")
    return bytes(data)


def open_bytes(bootstrap: bytes, blobs: list[bytes] | None = None) -> Image:
    return Image(BytesReadAt(bootstrap), None if blobs is None else [BytesReadAt(b) for b in blobs])


@contextlib.contextmanager
def deadline(seconds: int):
    def hung(*_):
        raise TimeoutError(f"operation did not finish within {seconds}s")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def exercise(bootstrap: bytes, blobs: list[bytes] | None) -> None:
    """Every reader operation over everything reachable; bounded reads of each file."""
    image = open_bytes(bootstrap, blobs)
    for path, inode in image.walk():
        image.stat(inode)
        image.xattrs(inode)
        if inode.is_symlink:
            image.readlink(inode)
        elif inode.is_reg:
            image.read(inode, 0, 1 << 16)
            image.read(inode, max(0, inode.size - 5000), 10000)
            if inode.size:
                image.map(inode, inode.size - 1)
        elif inode.is_dir:
            for entry in image.listdir(inode)[:3]:
                image.find(inode, entry.name)
        with contextlib.suppress(ErofsdError):
            image.lookup(path)


def dirent_offset(image: Image, directory: str, name: bytes) -> int:
    """Byte offset in the bootstrap of a dirent of a small (inline) directory."""
    inode = image.lookup(directory)
    names = [d.name for d in image.iterdir(inode)]
    return inode.tail_offset + names.index(name) * DIRENT.size


def test_valid_image_passes_exercise(small_image):
    bootstrap, blobs = small_image
    exercise(bootstrap, blobs)


@pytest.mark.parametrize("size", [0, 100, 1024, 1100, 4000])
def test_truncated_bootstraps(small_image, size):
    with pytest.raises(CorruptImage):
        open_bytes(small_image[0][:size])


def test_bad_magic_and_checksum(small_image):
    data = bytearray(small_image[0])
    data[SUPER_OFFSET] ^= 0xFF
    with pytest.raises(CorruptImage, match="magic"):
        open_bytes(bytes(data))
    data = bytearray(small_image[0])
    data[SUPER_OFFSET + 100] ^= 0x01  # inside the superblock's reserved bytes
    with pytest.raises(ChecksumMismatch) as info:
        open_bytes(bytes(data))
    assert info.value.errno == 74  # EBADMSG


def test_unknown_features_and_block_size(small_image):
    data = bytearray(small_image[0])
    struct.pack_into("<I", data, SUPER_OFFSET + 80, 0x4000)
    with pytest.raises(Unsupported, match="features"):
        open_bytes(rechecksum(data))
    data = bytearray(small_image[0])
    data[SUPER_OFFSET + 12] = 20
    with pytest.raises(Unsupported, match="block size"):
        open_bytes(rechecksum(data))


def test_root_nid_out_of_range_or_not_a_directory(small_image):
    image = open_bytes(small_image[0])
    data = bytearray(small_image[0])
    struct.pack_into("<H", data, SUPER_OFFSET + 14, 0xFFFF)
    with pytest.raises(CorruptImage, match="past the end"):
        open_bytes(rechecksum(data))
    struct.pack_into("<H", data, SUPER_OFFSET + 14, image.lookup("/file").nid)
    with pytest.raises(CorruptImage, match="not a directory"):
        open_bytes(rechecksum(data))


@pytest.mark.parametrize("directory, name, points_to", [
    ("/", b"sub", "/"),                    # child is the root again
    ("/sub", b"inner", "/sub"),            # child is its own parent
    ("/sub/inner", b"g", "/sub"),          # a file entry naming an ancestor directory
])
def test_directory_cycles_are_detected(small_image, directory, name, points_to):
    bootstrap, blobs = small_image
    image = open_bytes(bootstrap, blobs)
    data = bytearray(bootstrap)
    struct.pack_into("<Q", data, dirent_offset(image, directory, name), image.lookup(points_to).nid)
    with deadline(10), pytest.raises(CorruptImage, match="cycle"):
        for _ in open_bytes(rechecksum(data), blobs).walk():
            pass


def test_name_offset_outside_the_block(small_image):
    bootstrap, _ = small_image
    image = open_bytes(bootstrap)
    data = bytearray(bootstrap)
    struct.pack_into("<H", data, dirent_offset(image, "/", b"file") + 8, 5000)
    with pytest.raises(CorruptImage, match="name offset"):
        open_bytes(rechecksum(data)).listdir(image.root)


def _patch_inode(bootstrap: bytes, image: Image, path: str, **changes) -> bytes:
    inode = image.lookup(path)
    record = InodeRecord(**{**inode.record.__dict__, **changes})
    data = bytearray(bootstrap)
    packed = record.pack()
    data[inode.location:inode.location + len(packed)] = packed
    return rechecksum(data)


def test_chunk_table_past_the_end(small_image):
    bootstrap, blobs = small_image
    image = open_bytes(bootstrap, blobs)
    inode = image.lookup("/sub/f")
    huge = 1 << 40 if inode.record.extended else 0xFFFFFFFF  # 4 KiB chunks: a vast table
    bad = _patch_inode(bootstrap, image, "/sub/f", size=huge, i_u=inode.record.i_u & ~0x1F)
    broken = open_bytes(bad, blobs)
    with pytest.raises(CorruptImage, match="chunk table"):
        broken.read(broken.lookup("/sub/f"), 0, 100)


def test_device_ids_follow_the_kernel_mask():
    """erofs_map_dev masks device_id with roundup_pow_of_two(devices + 1) - 1."""
    one = [DeviceSlot(b"a" * 64, 10)]
    assert resolve_device(3, 4096, 12, one) == (1, 4096)  # 3 & 1 == 1
    two = [DeviceSlot(b"a" * 64, 10), DeviceSlot(b"b" * 64, 10)]
    assert resolve_device(2, 0, 12, two) == (2, 0)
    with pytest.raises(CorruptImage, match="device 3"):
        resolve_device(3, 0, 12, two)  # mask 3 lets 3 through: no such device
    mapped = [DeviceSlot(b"a" * 64, 10, mapped_blkaddr=100)]
    assert resolve_device(0, 101 * 4096 + 5, 12, mapped) == (1, 4096 + 5)
    assert resolve_device(0, 50 * 4096, 12, mapped) == (0, 50 * 4096)


def test_chunk_pointing_past_the_blob_data(small_image):
    bootstrap, blobs = small_image
    image = open_bytes(bootstrap, blobs)
    inode = image.lookup("/file")
    data = bytearray(bootstrap)
    struct.pack_into("<I", data, (inode.tail_offset + 7) // 8 * 8 + 4, 10_000)
    broken = open_bytes(rechecksum(data), blobs)
    with pytest.raises(CorruptImage, match="past the end of device 1"):
        broken.read(broken.lookup("/file"), 0, 10)


def test_truncated_blob(small_image):
    bootstrap, blobs = small_image
    image = open_bytes(bootstrap, [blobs[0][:4096]])
    with pytest.raises(CorruptImage, match="truncated"):
        image.read(image.lookup("/sub/f"), 0, 70000)


def test_compressed_layout_named(small_image):
    bootstrap, _ = small_image
    image = open_bytes(bootstrap)
    broken = open_bytes(_patch_inode(bootstrap, image, "/file", layout=3))
    with pytest.raises(Unsupported, match="FLAT_COMPRESSION"):
        broken.read(broken.lookup("/file"), 0, 1)


def test_inline_tail_crossing_a_block(small_image):
    bootstrap, _ = small_image
    image = open_bytes(bootstrap)
    bad = _patch_inode(bootstrap, image, "/link", size=4000)
    with pytest.raises(CorruptImage, match="crosses a block"):
        open_bytes(bad).lookup("/link")


def test_symlink_of_impossible_length(small_image):
    bootstrap, _ = small_image
    image = open_bytes(bootstrap)
    bad = open_bytes(_patch_inode(bootstrap, image, "/link", layout=0, size=0))
    with pytest.raises(CorruptImage, match="symlink"):
        bad.readlink(bad.lookup("/link"))


def test_xattr_count_past_the_end(small_image):
    bootstrap, _ = small_image
    image = open_bytes(bootstrap)
    bad = open_bytes(_patch_inode(bootstrap, image, "/file", xattr_icount=0xFFFF))
    with pytest.raises(CorruptImage):
        bad.xattrs(bad.lookup("/file"))


def test_huge_sparse_size_reads_in_bounded_memory(small_image):
    """A file claiming 2^62 bytes of holes: reads stay as small as asked."""
    bootstrap, blobs = small_image
    image = open_bytes(bootstrap, blobs)
    inode = image.lookup("/file")
    record = inode.record
    size = 1 << 40 if record.extended else 0xFFFFFFFF
    # chunk bits up so one chunk covers the whole file, and make that chunk a hole
    patched = bytearray(_patch_inode(bootstrap, image, "/file",
                                     i_u=(record.i_u & ~0x1F) | 28, size=size))
    struct.pack_into("<I", patched, (inode.tail_offset + 7) // 8 * 8 + 4, 0xFFFFFFFF)
    bad = open_bytes(rechecksum(patched), blobs)
    tracemalloc.start()
    try:
        with deadline(10):
            chunk = bad.read(bad.lookup("/file"), 1 << 30, 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(chunk) == 1 << 20
    assert peak < 16 << 20


FIXTURES_OK = [HealthCheck.function_scoped_fixture]
mutations = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1,
                     max_size=8)


def _mutate(data: bytes, changes, fix_checksum: bool) -> bytes:
    out = bytearray(data)
    for offset, value in changes:
        out[offset % len(out)] = value
    return rechecksum(out) if fix_checksum else bytes(out)


def _survives(bootstrap: bytes, blobs: list[bytes] | None) -> None:
    with deadline(20):
        try:
            exercise(bootstrap, blobs)
        except ErofsdError as e:
            assert isinstance(e.errno, int) and e.errno > 0


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES_OK)
@given(changes=mutations, fix_checksum=st.booleans())
def test_mutated_erofsd_images_fail_cleanly(small_image, changes, fix_checksum):
    bootstrap, blobs = small_image
    _survives(_mutate(bootstrap, changes, fix_checksum), blobs)


@pytest.fixture(scope="module")
def mkfs_image(tmp_path_factory) -> tuple[bytes, list[bytes]]:
    from trees import random_tree
    base = tmp_path_factory.mktemp("mkfs-corrupt")
    src = random_tree(base / "src", 3, entries=60, max_size=20000)
    blob = base / "blob"
    subprocess.run(["mkfs.erofs", "--quiet", "--chunksize=8192", f"--blobdev={blob}",
                    str(base / "img"), str(src)], check=True)
    return Path(base / "img").read_bytes(), [blob.read_bytes()]


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES_OK)
@given(changes=mutations, fix_checksum=st.booleans())
def test_mutated_mkfs_images_fail_cleanly(mkfs_image, changes, fix_checksum):
    bootstrap, blobs = mkfs_image
    _survives(_mutate(bootstrap, changes, fix_checksum), blobs)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES_OK)
@given(cut=st.integers(0, 2**16))
def test_truncated_images_fail_cleanly(small_image, cut):
    bootstrap, blobs = small_image
    _survives(bootstrap[:cut % len(bootstrap)], [b[:cut] for b in blobs])


def test_extended_inode_size_is_as_documented():
    assert INODE_EXTENDED.size == 64
