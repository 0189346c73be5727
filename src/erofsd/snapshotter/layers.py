"""Which Prepare is a layer of an erofsd image, and which image its mount serves.

An erofsd image's layers carry ``containerd.io/snapshot/erofsd.layer``
(``blob`` or ``bootstrap``, from their annotations) next to
``containerd.io/snapshot.ref``. A blob layer has nothing of its own to
mount; the bootstrap layer is where the whole image is mounted, pinned by
the manifest digest: ``docker://<image-ref without tag>@<manifest digest>``.
"""

from __future__ import annotations

import dataclasses
import re

from ..containerd.labels import IMAGE_REF, INDEX, MANIFEST_DIGEST, MAX_LABEL, SNAPSHOT_REF
from ..errors import BadReference, InvalidArgument
from ..oci.mediatypes import SNAPSHOT_LAYER
from ..oci.reference import parse_registry_ref

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True)
class RemoteLayer:
    target: str  # the chain ID containerd names the layer's snapshot by
    kind: str  # "blob" or "bootstrap"
    image: str = ""  # for the bootstrap: the pinned reference the daemon mounts
    index: str | None = None  # an ordinary image's index the daemon mounts it through


def check_labels(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        if len(key.encode()) + len(value.encode()) > MAX_LABEL:
            raise InvalidArgument(f"label {key[:60]!r} is longer than {MAX_LABEL} bytes")


def remote_layer(labels: dict[str, str]) -> RemoteLayer | None:
    """The erofsd layer a Prepare's labels describe, or None for an ordinary snapshot."""
    kind = labels.get(SNAPSHOT_LAYER)
    if kind is None:
        return None
    if kind not in ("blob", "bootstrap"):
        raise InvalidArgument(f"label {SNAPSHOT_LAYER} is {kind!r}: 'blob' or 'bootstrap'")
    target = labels.get(SNAPSHOT_REF)
    if not target:
        raise InvalidArgument(f"an erofsd layer needs the label {SNAPSHOT_REF} (pull the image "
                              "with `erofsd containerd pull`, or through the CRI plugin)")
    if kind == "blob":
        return RemoteLayer(target, kind)
    index = labels.get(INDEX)
    if index is not None and not DIGEST.match(index):
        raise InvalidArgument(f"label {INDEX} is not a sha256 digest: {index!r}")
    return RemoteLayer(target, kind, image_reference(labels), index)


def image_reference(labels: dict[str, str]) -> str:
    """docker://HOST/REPO@sha256:... of the image a bootstrap layer belongs to."""
    ref, digest = labels.get(IMAGE_REF), labels.get(MANIFEST_DIGEST)
    if not ref or not digest:
        raise InvalidArgument(f"an erofsd bootstrap layer needs the labels {IMAGE_REF} and "
                              f"{MANIFEST_DIGEST}")
    if not DIGEST.match(digest):
        raise InvalidArgument(f"label {MANIFEST_DIGEST} is not a sha256 digest: {digest!r}")
    try:
        parsed = parse_registry_ref("docker://" + ref.removeprefix("docker://"))
    except BadReference as e:
        raise InvalidArgument(f"label {IMAGE_REF}: {e}") from None
    return str(parsed.with_reference(digest=digest))
