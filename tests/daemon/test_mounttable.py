"""The mount table (daemon/mounttable.py): one line per change, folded, never fatal when edited."""

from __future__ import annotations

import json
import shutil

from erofsd.daemon import mounttable
from erofsd.daemon.mounttable import MountTable
from erofsd.datapaths.base import Mount


def mount(point: str) -> Mount:
    return Mount(mountpoint=point, image="oci:/srv/x", fsid=point.rsplit("/", 1)[-1],
                 domain_id=None, mode="fuse", manifest="{}",
                 manifest_digest="sha256:" + "0" * 64, worker_pid=99, created=1.5)


def points(table_path) -> list[str]:
    return [m.mountpoint for m in MountTable(table_path).load()]


def test_saved_mounts_load_back(tmp_path):
    table = MountTable(tmp_path / "daemon" / "mounts.json")
    assert table.load() == []
    table.save([mount("/mnt/a"), mount("/mnt/b")])
    loaded = MountTable(table.path).load()
    assert [m.to_json() for m in loaded] == [mount("/mnt/a").to_json(), mount("/mnt/b").to_json()]
    assert [p.name for p in table.path.parent.iterdir()] == ["mounts.json"]  # no temp left


def test_a_change_appends_one_line_and_leaves_the_snapshot_alone(tmp_path):
    table = MountTable(tmp_path / "mounts.json")
    table.save([mount(f"/mnt/{i}") for i in range(100)])
    snapshot = table.path.stat()
    table.add(mount("/mnt/new"))
    table.remove("/mnt/3")
    table.remove("/mnt/never")  # not there: nothing to say
    after = table.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (snapshot.st_ino, snapshot.st_mtime_ns)
    lines = [json.loads(x) for x in table.log_path.read_text().splitlines()]
    assert [next(iter(x)) for x in lines] == ["add", "remove"]
    # a daemon that died here (nothing closed, nothing folded) finds the same mounts
    expected = [f"/mnt/{i}" for i in range(100) if i != 3] + ["/mnt/new"]
    assert points(table.path) == expected
    assert not table.log_path.exists()  # loading folded the log into the snapshot


def test_the_log_is_folded_once_it_outgrows_the_table(tmp_path):
    table = MountTable(tmp_path / "mounts.json")
    table.load()
    limit = mounttable.FOLD_AT_LEAST
    for i in range(limit):
        table.add(mount(f"/mnt/{i}"))
    assert len(table.log_path.read_text().splitlines()) == limit
    table.add(mount("/mnt/last"))  # one more: a new snapshot instead, and an empty log
    assert not table.log_path.exists()
    assert len(json.loads(table.path.read_text())["mounts"]) == limit + 1
    table.remove("/mnt/0")
    assert points(table.path) == [f"/mnt/{i}" for i in range(1, limit)] + ["/mnt/last"]


def test_replaying_a_log_already_folded_changes_nothing(tmp_path):
    """A crash between the new snapshot and the log's removal leaves both: still right."""
    table = MountTable(tmp_path / "mounts.json")
    table.save([mount("/mnt/a"), mount("/mnt/b")])
    table.remove("/mnt/a")
    table.add(mount("/mnt/c"))
    table.add(mount("/mnt/a"))
    kept = tmp_path / "kept.log"
    shutil.copy(table.log_path, kept)
    table.save([mount("/mnt/b"), mount("/mnt/c"), mount("/mnt/a")])  # the fold
    shutil.copy(kept, table.log_path)
    assert points(table.path) == ["/mnt/b", "/mnt/c", "/mnt/a"]


def test_an_edited_or_torn_table_loses_only_what_is_broken(tmp_path):
    table = MountTable(tmp_path / "mounts.json")
    good = mount("/mnt/a").to_json()
    table.path.write_text(json.dumps({"mounts": [good, {"mountpoint": "/mnt/half"}, 7]}))
    assert points(table.path) == ["/mnt/a"]
    table.log_path.write_text(json.dumps({"add": mount("/mnt/b").to_json()}) + "\n"
                              + '{"add": {"mountpoint": "/mnt/c", "ima')  # torn by a crash
    assert points(table.path) == ["/mnt/a", "/mnt/b"]
    table.path.write_text("{ not json")
    assert points(table.path) == []
