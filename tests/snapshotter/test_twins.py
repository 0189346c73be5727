"""One reference for every node (snapshotter/twins.py, oci/twin.py): an index of the
ordinary image and its erofsd twin. containerd 1.6 picks the ordinary manifest;
the erofsd snapshotter finds the twin and mounts it, so no layer is downloaded."""

from __future__ import annotations

import json

from erofsd.containerd.pull import containerd_name
from erofsd.oci.mediatypes import EROFSD_IMAGE_ANNOTATION, OCI_INDEX
from erofsd.oci.reference import parse_registry_ref
from erofsd.oci.registry import RegistryClient
from erofsd.oci.transport import Transport
from erofsd.oci.twin import SOURCE_MANIFEST


def manifest(ref: str) -> tuple[dict, str]:
    parsed = parse_registry_ref(ref)
    raw, _, digest = RegistryClient(parsed.host, Transport(insecure=True)).get_manifest(parsed)
    return json.loads(raw), digest


def test_the_index_keeps_the_ordinary_manifest_first(busybox_images):
    index, _ = manifest(busybox_images["twin"])
    _, ordinary = manifest(busybox_images["ordinary"])
    assert index["mediaType"] == OCI_INDEX
    first, twin = index["manifests"]
    assert first["digest"] == ordinary and EROFSD_IMAGE_ANNOTATION not in (
        first.get("annotations") or {})
    assert twin["annotations"] == {EROFSD_IMAGE_ANNOTATION: "true", SOURCE_MANIFEST: ordinary}
    assert first["platform"] == twin["platform"] == {"os": "linux", "architecture": "amd64"}


def test_a_node_without_erofsd_runs_the_ordinary_image(node, busybox_images):
    name = containerd_name(busybox_images["twin"])
    node.containerd.ctr("image", "pull", "--plain-http", name)  # overlayfs: every layer
    out = node.containerd.ctr("run", "--rm", name, "plain", "cat", "/app/a.txt").stdout
    assert out == "app a\n"
    assert node.daemon.client.status()["mounts"] == []


def test_kubelets_pull_of_the_twin_index_mounts_the_twin(cri_node, registry, busybox_images):
    name = containerd_name(busybox_images["twin"])
    ordinary, ordinary_digest = manifest(busybox_images["ordinary"])
    index, _ = manifest(busybox_images["twin"])
    before = set(registry.blob_gets("ctd/ordinary", agent="containerd"))
    cri_node.cri_pull(name)
    fetched = set(registry.blob_gets("ctd/ordinary", agent="containerd")) - before
    assert not fetched & {layer["digest"] for layer in ordinary["layers"]}  # no layer
    (mount,) = cri_node.daemon.client.status()["mounts"]
    assert mount["manifest_digest"] == index["manifests"][1]["digest"]  # the twin
    assert cri_node.containerd.run(name, "k1", "cat", "/app/a.txt",
                                   namespace="k8s.io").stdout == "app a\n"


def test_erofsd_containerd_pull_takes_the_twin_at_once(node, busybox_images):
    index, _ = manifest(busybox_images["twin"])
    pulled = json.loads(node.pull(busybox_images["twin"], "--json").stdout)
    assert pulled["manifest"] == index["manifests"][1]["digest"]
    assert node.containerd.run(containerd_name(busybox_images["twin"]), "c1", "cat",
                               "/etc/motd").stdout.encode() == busybox_images["files"]["/etc/motd"]


def test_kubelets_pull_of_an_indexed_ordinary_image_runs_it_lazily(registry, busybox_images,
                                                                   tmp_path, _ctr_run_dirs):
    """[snapshotter] index = "discover": the CRI plugin's Prepares of an ordinary image
    that has an erofsd index are answered through it; containerd fetches no layer."""
    from containerdkit import Node
    from erofsd.oci.indexartifact import index_reference
    report = index_reference(busybox_images["ordinary"], insecure=True)
    ordinary, _ = manifest(busybox_images["ordinary"])
    name = containerd_name(busybox_images["ordinary"])
    for discover in (True, False):
        node = Node(tmp_path / f"node-{discover}", registry.host, cri=True,
                    config_extra='index = "discover"\n' if discover else "")
        try:
            before = len(registry.blob_gets("ctd/ordinary", agent="containerd"))
            node.cri_pull(name)
            fetched = set(registry.blob_gets("ctd/ordinary", agent="containerd")[before:])
            layers = {layer["digest"] for layer in ordinary["layers"]}
            mounts = node.daemon.client.status()["mounts"]
            if discover:
                assert not fetched & layers
                assert [m["index"] for m in mounts] == [report.index.digest]
            else:  # not asked to trust what the repository lists: the ordinary path
                assert layers <= fetched and mounts == []
            assert node.containerd.run(name, f"k{discover}", "cat", "/app/a.txt",
                                       namespace="k8s.io").stdout == "app a\n"
        finally:
            node.stop()
