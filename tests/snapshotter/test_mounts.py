"""The mounts a snapshot is used through (snapshotter/mounts.py), as overlayfs gives them."""

from __future__ import annotations

import pytest

from erofsd.snapshotter.mounts import snapshot_mounts


def test_no_lower_is_a_bind_mount():
    assert snapshot_mounts("active", "/s/1/fs", "/s/1/work", []) == [
        {"type": "bind", "source": "/s/1/fs", "options": ["rw", "rbind"]}]
    assert snapshot_mounts("view", "/s/1/fs", "/s/1/work", [])[0]["options"] == ["ro", "rbind"]


def test_a_view_of_one_lower_binds_it_read_only():
    assert snapshot_mounts("view", "/s/2/fs", "/s/2/work", ["/m/7"]) == [
        {"type": "bind", "source": "/m/7", "options": ["ro", "rbind"]}]


def test_an_active_snapshot_is_an_overlay_over_its_lowers_nearest_first():
    (mount,) = snapshot_mounts("active", "/s/3/fs", "/s/3/work", ["/s/2/fs", "/m/7"])
    assert mount["type"] == "overlay" and mount["options"] == [
        "index=off", "workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/m/7"]
    (view,) = snapshot_mounts("view", "/s/4/fs", "/s/4/work", ["/s/2/fs", "/m/7"])
    assert view["options"] == ["index=off", "lowerdir=/s/2/fs:/m/7"]


def test_a_lower_overlay_cannot_name_is_refused():
    with pytest.raises(ValueError):
        snapshot_mounts("active", "/s/3/fs", "/s/3/work", ["/a:b"])
