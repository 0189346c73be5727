"""The one mount record (datapaths/base.py): persisted, read back as earlier releases wrote it."""

from __future__ import annotations

import json

import pytest

from erofsd.datapaths.base import PERSISTED, Mount

MANIFEST = json.dumps({"schemaVersion": 2, "layers": []})


def record(**changes) -> dict:
    value = {"mountpoint": "/mnt/a", "image": "docker://127.0.0.1:5000/a:v1", "fsid": "f1",
             "domain_id": "d1", "mode": "fanotify", "manifest": MANIFEST,
             "manifest_digest": "sha256:" + "ab" * 32, "insecure": True, "mirror": None,
             "worker_pid": None, "created": 1795469284.5, "prefetch": False,
             "index_manifest": None, "index_digest": None}
    value.update(changes)
    return value


def test_the_persisted_fields_round_trip_and_nothing_live_is_written():
    mount = Mount.from_json(record())
    mount.bootstrap_fd, mount.bootstrap_path = 7, "/var/lib/erofsd/bootstraps/x"
    assert mount.to_json() == record()
    assert set(mount.to_json()) == set(PERSISTED)
    assert json.loads(mount.dumps()) == record()


def test_names_follow_the_kernel():
    assert (Mount.from_json(record()).name, Mount.from_json(record()).volume) == \
        ("d1,f1", "erofs,d1")
    private = Mount.from_json(record(domain_id=None))
    assert (private.name, private.volume) == ("f1", "erofs,f1")


def test_a_record_of_an_earlier_release_reads_back():
    """mounts.json written before this release: the same keys, worker_pid for FUSE."""
    old = record(mode="fuse", worker_pid=4242)
    del old["created"], old["prefetch"], old["index_manifest"], old["index_digest"]
    mount = Mount.from_json(old)
    assert (mount.mode, mount.worker_pid, mount.insecure, mount.prefetch) == \
        ("fuse", 4242, True, False)


@pytest.mark.parametrize("missing", ["mountpoint", "fsid", "manifest_digest"])
def test_a_record_without_what_every_mount_has_is_refused(missing):
    value = record()
    del value[missing]
    with pytest.raises(ValueError, match=f"lacks {missing}"):
        Mount.from_json(value)
