"""What the kernel says is mounted (kernel/mount.py): mountinfo as the kernel escapes it, statx."""

from __future__ import annotations

import errno
import os

import pytest

from erofsd.kernel import mount as kernel_mount
from erofsd.kernel.mount import (
    erofs_options,
    is_mount_point,
    mount,
    parse_mountinfo,
    umount,
    unescape_mountinfo,
)

MS_BIND = 4096

MOUNTINFO = (
    "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "40 22 0:35 / /mnt/with\\040space rw shared:2 master:1 - erofs /srv/boot ro\n"
    "41 22 0:36 / /mnt/back\\134slash rw - fuse.erofs erofsd ro,user_id=0\n"
    "42 22 0:37 / /mnt/caf\u00e9 ro - erofs none ro,fsid=a1,domain_id=d1\n"
)


def test_mount_points_and_types_come_out_unescaped():
    assert parse_mountinfo(MOUNTINFO) == {
        "/": "ext4", "/mnt/with space": "erofs", "/mnt/back\\slash": "fuse.erofs",
        "/mnt/caf\u00e9": "erofs"}


def test_unescape_leaves_plain_fields_and_odd_backslashes_alone():
    assert unescape_mountinfo("/plain") == "/plain"
    assert unescape_mountinfo("/a\\011tab\\012nl") == "/a\ttab\nnl"
    assert unescape_mountinfo("/trailing\\") == "/trailing\\"


def test_a_device_path_with_a_comma_cannot_be_passed():
    assert erofs_options(["/c/a", "/c/b"]) == "device=/c/a,device=/c/b"
    with pytest.raises(OSError) as info:
        erofs_options(["/c/a,b"])
    assert info.value.errno == errno.EINVAL


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
@pytest.mark.parametrize("how", ["statx", "mountinfo"])
def test_a_mount_point_is_told_from_a_directory_also_for_bind_mounts_of_one_filesystem(
        tmp_path, monkeypatch, how):
    if how == "statx":  # constant time: the mount table is never read
        def unread():
            raise AssertionError("statx should have answered")
        monkeypatch.setattr(kernel_mount, "mounted_filesystems", unread)
    else:  # a kernel or libc without statx
        monkeypatch.setattr(kernel_mount, "_statx", None)
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    assert not is_mount_point(str(target)) and is_mount_point("/")
    mount(str(source), str(target), "none", MS_BIND, None)  # same st_dev as its parent
    try:
        assert is_mount_point(str(target))
    finally:
        umount(str(target))
    assert not is_mount_point(str(target))
    assert not is_mount_point(str(tmp_path / "missing"))
