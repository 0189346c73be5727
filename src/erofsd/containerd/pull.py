"""``erofsd containerd pull``: record an erofsd image in containerd without fetching a layer.

``ctr image pull`` in containerd 1.6 prepares snapshots without labels, so
a snapshotter never learns that a layer is remote. This pull does what the
CRI plugin does instead, in a lease: it stores the manifest and the config
in containerd's content store (with the GC labels its own pull writes),
prepares each layer's snapshot with ``containerd.io/snapshot.ref`` (the
chain ID), the layer's ``containerd.io/snapshot/`` annotations and the
``cri.*`` labels, expects ALREADY_EXISTS for every one (the erofsd
snapshotter has mounted the image by then), and creates the image record
under the name ``ctr`` gives it (``HOST/REPO:TAG``). ``ctr run
--snapshotter erofsd HOST/REPO:TAG`` then finds the image unpacked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets

from ..errors import BadReference, ErofsdError
from ..oci.descriptor import Descriptor
from ..oci.image import ErofsdManifest
from ..oci.indexed import image_manifest, with_index
from ..oci.manifest import parse_object
from ..oci.mediatypes import OCI_MANIFEST, SNAPSHOT_LAYER
from ..oci.reference import DOCKER_HUB, parse_registry_ref
from ..oci.source import resolve_image
from ..oci.transport import Transport
from .client import Containerd
from .labels import (
    IMAGE_REF,
    INDEX,
    INHERITED_PREFIX,
    LAYER_DIGEST,
    MANIFEST_DIGEST,
    SNAPSHOT_REF,
)


@dataclasses.dataclass
class PullReport:
    name: str  # the image record's name
    manifest: str  # the manifest digest
    layers: int
    prepared: int  # snapshots this pull made
    present: int  # snapshots containerd had already
    fetched_bytes: int  # what came from the registry: the manifest and the config
    top: str  # the chain ID of the image's last layer


def containerd_name(text: str) -> str:
    """The name ``ctr`` records a docker:// reference under."""
    ref = parse_registry_ref(text)
    host = "docker.io" if ref.host == DOCKER_HUB else ref.host
    return f"{host}/{ref.repository}" + (f"@{ref.digest}" if ref.digest else f":{ref.tag}")


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain ID of each layer: what containerd names its snapshots by."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else
                      "sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def layer_labels(name: str, manifest: ErofsdManifest, layer: Descriptor, chain: str,
                 mounted_at: str) -> dict[str, str]:
    """What the CRI plugin sends with a layer's Prepare (and what the snapshotter reads).
    ``mounted_at`` is the layer whose Prepare mounts the image: an erofsd image's
    bootstrap, an ordinary image's last layer (through ``manifest.index_digest``)."""
    labels = {k: v for k, v in layer.annotations.items() if k.startswith(INHERITED_PREFIX)}
    # images of earlier releases carry no annotation: say which layer it is all the same
    labels[SNAPSHOT_LAYER] = "bootstrap" if layer.digest == mounted_at else "blob"
    labels.update({SNAPSHOT_REF: chain, IMAGE_REF: name, MANIFEST_DIGEST: manifest.digest,
                   LAYER_DIGEST: layer.digest})
    if manifest.index_digest and layer.digest == mounted_at:
        labels[INDEX] = manifest.index_digest
    return labels


def pull(image: str, *, address: str, namespace: str = "default", snapshotter: str = "erofsd",
         insecure: bool = False, index: str | None = None) -> PullReport:
    """Hand containerd an erofsd image (or an ordinary one through ``index``: a digest or
    "discover") whose layers the snapshotter serves lazily."""
    if not image.startswith("docker://"):
        raise BadReference(f"containerd pulls from registries: docker://HOST/REPO:TAG, not "
                           f"{image!r}")
    name = containerd_name(image)
    transport = Transport(insecure=insecure)
    ctr = Containerd(address, namespace)
    try:
        resolved = resolve_image(image, transport=transport)
        if index:
            resolved = with_index(resolved, index)
        manifest = image_manifest(resolved)
        raw_manifest = parse_object(resolved.manifest, "manifest")
        media_type = raw_manifest.get("mediaType") or OCI_MANIFEST
        layers = [Descriptor.from_json(d, f"layer {i}")
                  for i, d in enumerate(raw_manifest["layers"])]
        config = resolved.read_blob(manifest.config.digest, manifest.config.size, "config")
        diff_ids = (parse_object(config, "image config").get("rootfs") or {}).get("diff_ids")
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise BadReference(f"{image}: its config names {len(diff_ids or [])} diff_ids for "
                               f"{len(layers)} layers")
        chains = chain_ids(diff_ids)
        mounted_at = layers[-1].digest if manifest.index_digest else manifest.bootstrap.digest
        report = PullReport(name, manifest.digest, len(layers), 0, 0,
                            len(resolved.manifest) + len(config), chains[-1])
        with ctr.leased():
            source = {f"containerd.io/distribution.source.{parse_registry_ref(image).host}":
                      parse_registry_ref(image).repository}
            ctr.write_blob(resolved.manifest, manifest.digest, {
                "containerd.io/gc.ref.content.config": manifest.config.digest,
                **{f"containerd.io/gc.ref.content.l.{i}": d.digest for i, d in enumerate(layers)},
                **source})
            for i, (layer, chain) in enumerate(zip(layers, chains, strict=True)):
                if ctr.stat_snapshot(snapshotter, chain) is not None:
                    report.present += 1
                    continue
                key = f"extract-{secrets.token_hex(6)} {chain}"
                if not ctr.prepare_snapshot(snapshotter, key, chains[i - 1] if i else "",
                                            layer_labels(name, manifest, layer, chain,
                                                         mounted_at)):
                    ctr.remove_snapshot(snapshotter, key)
                    raise ErofsdError(f"snapshotter {snapshotter} made an ordinary snapshot of "
                                      f"layer {layer.digest}: is it erofsd's snapshotter?")
                report.prepared += 1
            ctr.write_blob(config, manifest.config.digest,
                           {f"containerd.io/gc.ref.snapshot.{snapshotter}": chains[-1], **source})
            ctr.put_image(name, media_type, manifest.digest, len(resolved.manifest))
        return report
    finally:
        ctr.close()
        transport.close()
