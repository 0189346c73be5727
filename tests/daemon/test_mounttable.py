"""mounts.json (daemon/mounttable.py): saved whole, read back, and never fatal when edited."""

from __future__ import annotations

import json

from erofsd.daemon.mounttable import MountTable
from erofsd.datapaths.base import Mount


def mount(point: str) -> Mount:
    return Mount(mountpoint=point, image="oci:/srv/x", fsid=point.rsplit("/", 1)[-1],
                 domain_id=None, mode="fuse", manifest="{}",
                 manifest_digest="sha256:" + "0" * 64, worker_pid=99, created=1.5)


def test_saved_mounts_load_back(tmp_path):
    table = MountTable(tmp_path / "daemon" / "mounts.json")
    assert table.load() == []
    table.save([mount("/mnt/a"), mount("/mnt/b")])
    loaded = table.load()
    assert [m.to_json() for m in loaded] == [mount("/mnt/a").to_json(), mount("/mnt/b").to_json()]
    assert [p.name for p in table.path.parent.iterdir()] == ["mounts.json"]  # no temp left


def test_an_edited_table_loses_only_what_is_broken(tmp_path):
    table = MountTable(tmp_path / "mounts.json")
    good = mount("/mnt/a").to_json()
    table.path.write_text(json.dumps({"mounts": [good, {"mountpoint": "/mnt/half"}]}))
    assert [m.mountpoint for m in table.load()] == ["/mnt/a"]
    table.path.write_text("{ not json")
    assert table.load() == []
