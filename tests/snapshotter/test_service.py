"""The snapshots.v1 service (snapshotter/service.py), spoken to over gRPC as containerd does.

The server runs in this process on a socket of its own; no containerd.
Ordinary snapshots behave as containerd's overlayfs snapshotter's; bad
labels and layers that cannot be mounted get a clear gRPC error and leave
no half-made snapshot behind.
"""

from __future__ import annotations

import os
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from erofsd.config import Config
from erofsd.containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from erofsd.containerd.api.services.snapshots.v1 import snapshots_pb2_grpc
from erofsd.containerd.labels import IMAGE_REF, MANIFEST_DIGEST, SNAPSHOT_REF
from erofsd.oci.mediatypes import SNAPSHOT_LAYER
from erofsd.snapshotter.daemonlink import DaemonLink
from erofsd.snapshotter.service import SnapshotService
from erofsd.snapshotter.store import Store


class Served:
    def __init__(self, root: Path, config: Config) -> None:
        self.root = root
        self.service = SnapshotService(Store(root / "metadata.db"), root, DaemonLink(config),
                                       config)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        snapshots_pb2_grpc.add_SnapshotsServicer_to_server(self.service, self.server)
        address = f"unix://{root}/snapshotter.sock"
        self.server.add_insecure_port(address)
        self.server.start()
        self.channel = grpc.insecure_channel(address)
        self.stub = snapshots_pb2_grpc.SnapshotsStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(None)
        self.service.store.close()


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path / "snap", Config(state_dir=str(tmp_path / "d"),
                                         socket=str(tmp_path / "none.sock")))
    yield s
    s.close()


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def options(mounts) -> list[tuple[str, str, list[str]]]:
    return [(m.type, m.source, list(m.options)) for m in mounts]


def test_ordinary_snapshots_are_the_overlayfs_snapshotters(served):
    stub, root = served.stub, served.root
    first = stub.Prepare(pb.PrepareSnapshotRequest(key="default/1/a"))
    (kind, source, opts), = options(first.mounts)
    assert (kind, opts) == ("bind", ["rw", "rbind"]) and source.startswith(str(root))
    Path(source, "file").write_text("layer one")
    stub.Commit(pb.CommitSnapshotRequest(name="default/2/L1", key="default/1/a",
                                         labels={"x": "1"}))
    upper = stub.Prepare(pb.PrepareSnapshotRequest(key="default/3/b", parent="default/2/L1"))
    (kind, _, opts), = options(upper.mounts)
    assert kind == "overlay" and f"lowerdir={source}" in opts
    assert any(o.startswith("upperdir=") for o in opts) and "index=off" in opts
    view = stub.View(pb.ViewSnapshotRequest(key="default/4/v", parent="default/2/L1"))
    assert options(view.mounts) == [("bind", source, ["ro", "rbind"])]
    info = stub.Stat(pb.StatSnapshotRequest(key="default/2/L1")).info
    assert (info.kind, info.parent, dict(info.labels)) == (pb.COMMITTED, "", {"x": "1"})
    usage = stub.Usage(pb.UsageRequest(key="default/2/L1"))
    assert usage.inodes == 2 and usage.size >= 4096
    assert code_of(lambda: stub.Remove(pb.RemoveSnapshotRequest(key="default/2/L1")))[0] == \
        grpc.StatusCode.FAILED_PRECONDITION  # it has children
    for key in ("default/3/b", "default/4/v", "default/2/L1"):
        stub.Remove(pb.RemoveSnapshotRequest(key=key))
    assert list(stub.List(pb.ListSnapshotsRequest())) == []
    assert sorted(os.listdir(root / "snapshots")) == []


def test_list_filters_and_label_updates(served):
    stub = served.stub
    for i, ref in enumerate(["sha256:aa", "sha256:bb"]):
        stub.Prepare(pb.PrepareSnapshotRequest(key=f"ns/{i}/k", labels={SNAPSHOT_REF: ref}))
        stub.Commit(pb.CommitSnapshotRequest(name=f"ns/{i}/c", key=f"ns/{i}/k",
                                             labels={SNAPSHOT_REF: ref, "team": "x"}))
    found = [i.name for r in stub.List(pb.ListSnapshotsRequest(filters=[
        f'labels."{SNAPSHOT_REF}"==sha256:bb,parent==""'])) for i in r.info]
    assert found == ["ns/1/c"]
    either = [i.name for r in stub.List(pb.ListSnapshotsRequest(
        filters=["name==ns/0/c", "name==ns/1/c"])) for i in r.info]
    assert either == ["ns/0/c", "ns/1/c"]
    info = pb.Info(name="ns/0/c", labels={"team": "y"})
    updated = stub.Update(pb.UpdateSnapshotRequest(info=info,
                                                   update_mask={"paths": ["labels.team"]}))
    assert dict(updated.info.labels) == {SNAPSHOT_REF: "sha256:aa", "team": "y"}
    assert code_of(lambda: stub.Update(pb.UpdateSnapshotRequest(
        info=info, update_mask={"paths": ["parent"]})))[0] == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("labels, message", [
    ({SNAPSHOT_LAYER: "weird", SNAPSHOT_REF: "sha256:aa"}, "'blob' or 'bootstrap'"),
    ({SNAPSHOT_LAYER: "blob"}, "needs the label containerd.io/snapshot.ref"),
    ({SNAPSHOT_LAYER: "bootstrap", SNAPSHOT_REF: "sha256:aa"}, "needs the labels"),
    ({SNAPSHOT_LAYER: "bootstrap", SNAPSHOT_REF: "sha256:aa", IMAGE_REF: "h:1/r:t",
      MANIFEST_DIGEST: "md5:1"}, "not a sha256 digest"),
    ({SNAPSHOT_LAYER: "bootstrap", SNAPSHOT_REF: "sha256:aa", IMAGE_REF: "not a ref!",
      MANIFEST_DIGEST: "sha256:" + "0" * 64}, "label containerd.io/snapshot/cri.image-ref"),
    ({"big": "x" * 5000}, "longer than 4096 bytes"),
])
def test_bad_labels_are_invalid_arguments_and_leave_nothing(served, labels, message):
    code, details = code_of(lambda: served.stub.Prepare(pb.PrepareSnapshotRequest(
        key="default/9/x", labels=labels)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, details
    assert list(served.stub.List(pb.ListSnapshotsRequest())) == []
    assert os.listdir(served.root / "snapshots") == []


def test_a_key_without_a_namespace_is_refused(served):
    code, details = code_of(lambda: served.stub.Prepare(pb.PrepareSnapshotRequest(key="bare")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "<namespace>/<n>/<key>" in details


def test_an_image_the_daemon_cannot_mount_leaves_no_half_made_snapshot(tmp_path, daemon,
                                                                       registry):
    config = Config(state_dir=str(daemon.state), socket=daemon.socket,
                    insecure_registries=(registry.host,))
    served = Served(tmp_path / "snap", config)
    stub = served.stub
    try:
        code, _ = code_of(lambda: stub.Prepare(pb.PrepareSnapshotRequest(
            key="default/1/blob", labels={SNAPSHOT_LAYER: "blob",
                                          SNAPSHOT_REF: "sha256:" + "1" * 64})))
        assert code == grpc.StatusCode.ALREADY_EXISTS  # a blob layer commits at once
        code, details = code_of(lambda: stub.Prepare(pb.PrepareSnapshotRequest(
            key="default/2/boot", parent="default/erofsd/sha256:" + "1" * 64, labels={
                SNAPSHOT_LAYER: "bootstrap", SNAPSHOT_REF: "sha256:" + "2" * 64,
                IMAGE_REF: f"{registry.host}/no/such:image",
                MANIFEST_DIGEST: "sha256:" + "3" * 64})))
        assert code == grpc.StatusCode.NOT_FOUND and "no such manifest" in details, details
        names = [i.name for r in stub.List(pb.ListSnapshotsRequest()) for i in r.info]
        assert names == ["default/erofsd/sha256:" + "1" * 64]  # the blob, nothing else
        assert os.listdir(served.root / "mounts") == []
        assert daemon.client.status()["mounts"] == []
    finally:
        served.close()
