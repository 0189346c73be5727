"""Which Prepare is an erofsd layer (snapshotter/layers.py), and the CRI plugin's own path."""

from __future__ import annotations

import pytest

from erofsd.containerd.labels import IMAGE_REF, MANIFEST_DIGEST, SNAPSHOT_REF
from erofsd.containerd.pull import containerd_name
from erofsd.errors import InvalidArgument
from erofsd.oci.image import ErofsdManifest
from erofsd.oci.mediatypes import SNAPSHOT_LAYER
from erofsd.oci.source import resolve_image
from erofsd.oci.transport import Transport
from erofsd.snapshotter.layers import RemoteLayer, remote_layer

DIGEST = "sha256:" + "ab" * 32


def test_an_ordinary_layer_is_not_remote():
    assert remote_layer({SNAPSHOT_REF: DIGEST, IMAGE_REF: "h/r:t"}) is None


def test_a_blob_needs_only_its_chain_id():
    assert remote_layer({SNAPSHOT_LAYER: "blob", SNAPSHOT_REF: DIGEST}) == \
        RemoteLayer(DIGEST, "blob")


def test_a_bootstrap_names_its_image_pinned_by_the_manifest_digest():
    labels = {SNAPSHOT_LAYER: "bootstrap", SNAPSHOT_REF: DIGEST, MANIFEST_DIGEST: DIGEST}
    for ref in ("127.0.0.1:5000/team/web:v1", "127.0.0.1:5000/team/web@" + DIGEST,
                "docker://127.0.0.1:5000/team/web:v1"):
        assert remote_layer({**labels, IMAGE_REF: ref}).image == \
            f"docker://127.0.0.1:5000/team/web@{DIGEST}"
    with pytest.raises(InvalidArgument, match="needs the labels"):
        remote_layer({SNAPSHOT_LAYER: "bootstrap", SNAPSHOT_REF: DIGEST})


def test_kubelets_pull_through_the_cri_plugin_fetches_no_layer(cri_node, registry,
                                                             busybox_images):
    """PullImage to containerd's CRI socket: its unpacker sends the labels, the snapshotter
    mounts the image, and the registry serves containerd the manifest and the config only."""
    name = containerd_name(busybox_images["b"])
    before = set(registry.blob_gets("ctd/busy", agent="containerd"))
    assert cri_node.cri_pull(name).startswith("sha256:")
    fetched = set(registry.blob_gets("ctd/busy", agent="containerd")) - before
    resolved = resolve_image(busybox_images["b"], transport=Transport(insecure=True))
    config = ErofsdManifest.parse(resolved.manifest, resolved.digest).config.digest
    assert fetched <= {config}  # no layer: neither a blob nor the bootstrap
    (mount,) = cri_node.daemon.client.status()["mounts"]
    assert mount["manifest_digest"] == resolved.digest
    assert mount["domain_id"] == "node" and mount["fsid"].startswith("k8s.io-")
    out = cri_node.containerd.run(name, "c1", "cat", "/app/b.txt", namespace="k8s.io").stdout
    assert out == "app b\n"
