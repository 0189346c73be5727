"""Ordinary layers that have an erofsd twin: found from the CRI plugin's labels.

containerd's CRI plugin picks the ordinary manifest of a twin index (see
``oci/twin.py``) and prepares its layers with ``cri.image-ref`` and
``cri.manifest-digest``. The index that reference names offers the twin for
exactly that manifest, so every one of its layers is answered from the
twin: the last one mounts it, the others are committed with nothing of
their own, and containerd downloads none. With ``[snapshotter] index =
"discover"``, an ordinary image without a twin is served the same way
through the erofsd index its repository lists for that manifest
(oci/indexed.py: the trust rule is checked there). An image with neither,
or a registry that cannot be asked, is left to the ordinary path.
"""

from __future__ import annotations

import dataclasses
import logging

from ..config import Config
from ..containerd.labels import IMAGE_REF, LAYER_DIGEST, MANIFEST_DIGEST, SNAPSHOT_REF
from ..errors import ErofsdError, NotFound
from ..lru import Lru
from ..oci.indexed import with_index
from ..oci.manifest import parse_object
from ..oci.reference import parse_registry_ref
from ..oci.referrers import DISCOVER
from ..oci.registry import RegistryClient
from ..oci.source import RegistrySource, ResolvedImage
from ..oci.transport import Transport
from ..oci.twin import find_twin
from .layers import RemoteLayer

log = logging.getLogger("erofsd.snapshotter")
KEEP = 1024  # images remembered
UNKNOWN = object()


@dataclasses.dataclass(frozen=True)
class Twin:
    image: str  # docker://HOST/REPO@<the twin's manifest digest, or the ordinary one's>
    top: str  # the digest of the ordinary manifest's last layer
    index: str | None = None  # the ordinary image's index, when it is served through one


class Twins:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._known: Lru[tuple[str, str], Twin | None] = Lru(KEEP)

    def layer(self, labels: dict[str, str]) -> RemoteLayer | None:
        """The erofsd layer standing for this ordinary layer, when the image has a twin."""
        ref, manifest = labels.get(IMAGE_REF), labels.get(MANIFEST_DIGEST)
        target, digest = labels.get(SNAPSHOT_REF), labels.get(LAYER_DIGEST)
        if not (ref and manifest and target and digest):
            return None
        twin = self._twin(ref, manifest)
        if twin is None:
            return None
        if digest == twin.top:
            return RemoteLayer(target, "bootstrap", twin.image, twin.index)
        return RemoteLayer(target, "blob")

    def _twin(self, ref: str, manifest: str) -> Twin | None:
        key = (ref, manifest)
        known = self._known.get(key, UNKNOWN)
        if known is not UNKNOWN:
            return known
        try:
            twin = self._look(ref, manifest)
        except ErofsdError as e:  # not remembered: the next layer asks again
            log.warning("cannot look for an erofsd twin of %s: %s", ref, e)
            return None
        self._known.put(key, twin)
        return twin

    def _look(self, ref: str, manifest: str) -> Twin | None:
        image = parse_registry_ref("docker://" + ref.removeprefix("docker://"))
        transport = Transport(insecure=self.config.insecure(image.host))
        try:
            client = RegistryClient(image.host, transport)
            top, _, _ = client.get_manifest(image)
            found = find_twin(top, manifest)
            if found is None and not self.config.discover_indexes:
                return None
            ordinary, _, _ = client.get_manifest(image.with_reference(digest=manifest))
            layers = parse_object(ordinary, "manifest").get("layers") or []
            if not layers:
                return None
            if found is not None:
                log.info("%s has an erofsd twin: %s", ref, found.digest)
                return Twin(str(image.with_reference(digest=found.digest)),
                            layers[-1]["digest"])
            pinned = str(image.with_reference(digest=manifest))
            try:
                indexed = with_index(ResolvedImage(pinned, ordinary, manifest,
                                                   RegistrySource(client, image.repository)),
                                     DISCOVER)
            except NotFound:
                return None
            log.info("%s has an erofsd index: %s", ref, indexed.index.digest)
            return Twin(pinned, layers[-1]["digest"], indexed.index.digest)
        finally:
            transport.close()
