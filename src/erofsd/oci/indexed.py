"""An ordinary image seen through its index: what a mount of it serves, and whether to.

The index is not covered by the image's digest: anyone who can push to
the repository can publish one, and an index can make a mount show any
files (its bootstrap says what the files are; its checkpoints shape what
the layers inflate to). So an index is used only when it is *pinned*: the
reader names its digest (``--index sha256:...``), or asks for discovery
(``--index discover``) and so states that it trusts whoever can push to
the repository. Either way it must be an erofsd index whose subject is
exactly this image and whose span tables name exactly this image's layers,
in order, with the diff_ids of the image's config; and every byte served is
checked against the index's digests. What the index alone vouches for (a
span's uncompressed digest) is checked against the image once a layer is
whole: its tar against the diff_id, before anything marks it complete.

The view is an ``ErofsdManifest`` like any erofsd image's: the index's
bootstrap, and per layer a blob reference whose stored blob is the gzip
layer itself, whose data is its tar, and whose chunk table (a span table)
lives in the index's own blob, beside the window blob its spans are entered
with.
"""

from __future__ import annotations

import json
from concurrent.futures import wait

from ..errors import BadReference, NotFound
from ..pools import process_pool
from .descriptor import Descriptor, check_digest
from .image import MAX_DATA_SIZE, BlobRef, ErofsdManifest
from .manifest import parse_object
from .mediatypes import (
    DIFF_ID,
    INDEX_ARTIFACT,
    INDEX_BOOTSTRAP,
    INDEX_SPANS,
    INDEX_WINDOWS,
    LAYER,
    TAR_SIZE,
)
from .ordinary import read_ordinary
from .referrers import DISCOVER, fallback_tag, of_type, referrers_in
from .source import PinnedIndex, ResolvedImage


def image_manifest(image: ResolvedImage) -> ErofsdManifest:
    """What a reader serves: the erofsd image, or the ordinary image through its index."""
    if image.index is None:
        return ErofsdManifest.parse(image.manifest, image.digest)
    return indexed_manifest(image.manifest, image.digest, image.index)


def with_index(image: ResolvedImage, choice: str) -> ResolvedImage:
    """``image`` with the index ``choice`` names (a digest, or ``discover``), checked."""
    digest = discover(image) if choice == DISCOVER else check_digest(choice)
    ordinary = process_pool("erofsd-resolve", 2).submit(read_ordinary, image, image.reference)
    try:
        raw = image.source.read_manifest(digest)  # while the config is fetched
    except NotFound:
        raise NotFound(f"{image.reference}: no index {digest} in its repository") from None
    finally:
        wait([ordinary])  # and its error, if any, is left for later
    pinned = PinnedIndex(raw, digest)
    view = indexed_manifest(image.manifest, image.digest, pinned)  # refused here, not later
    diff_ids = ordinary.result().diff_ids
    if diff_ids and tuple(b.diff_id for b in view.blobs) != diff_ids:
        raise BadReference(f"index {digest}: its layers' diff_ids are not the image's")
    return ResolvedImage(image.reference, image.manifest, image.digest, image.source, pinned)


def discover(image: ResolvedImage) -> str:
    """The digest of the newest erofsd index listed as a referrer of ``image``: by the
    registry's referrers API where it has one, else under the tag schema."""
    listed = image.source.read_referrers(image.digest)
    found = of_type(referrers_in(listed), INDEX_ARTIFACT) if listed else []
    if not found:
        try:
            listed = image.source.read_manifest(fallback_tag(image.digest))
        except NotFound:
            listed = None
        found = of_type(referrers_in(listed), INDEX_ARTIFACT) if listed else []
    if not found:
        raise NotFound(f"{image.reference} has no erofsd index (make one with `erofsd index`)")
    return found[-1].digest


def indexed_manifest(manifest: bytes, digest: str, index: PinnedIndex) -> ErofsdManifest:
    """The view of the ordinary image ``manifest`` through ``index``; BadReference when the
    index is not an erofsd index of exactly this image."""
    image = parse_object(manifest, "manifest")
    what = f"index {index.digest}"
    try:
        value = json.loads(index.manifest)
    except ValueError:
        raise BadReference(f"{what} is not JSON") from None
    if not isinstance(value, dict) or value.get("artifactType") != INDEX_ARTIFACT:
        raise BadReference(f"{what} is not an erofsd index")
    subject = Descriptor.from_json(value.get("subject"), f"{what} subject")
    if subject.digest != digest:
        raise BadReference(f"{what} indexes image {subject.digest}, not this one ({digest})")
    layers = [Descriptor.from_json(d, f"layer {i}") for i, d in enumerate(image["layers"])]
    parts = value.get("layers")
    if not isinstance(parts, list) or len(parts) != 2 * len(layers) + 1:
        raise BadReference(f"{what} does not have a bootstrap, then a span table and its "
                           f"windows per layer of the image ({len(layers)})")
    bootstrap, *rest = [Descriptor.from_json(p, f"{what} part {i}")
                        for i, p in enumerate(parts)]
    tables, windows = rest[0::2], rest[1::2]
    if bootstrap.media_type != INDEX_BOOTSTRAP \
            or any(t.media_type != INDEX_SPANS for t in tables) \
            or any(w.media_type != INDEX_WINDOWS for w in windows):
        raise BadReference(f"{what}: its parts are not a bootstrap, span tables and windows")
    blobs = []
    for n, (layer, table, window) in enumerate(zip(layers, tables, windows, strict=True)):
        for part in table, window:
            if part.annotations.get(LAYER) != layer.digest:
                raise BadReference(f"{what}: part {part.digest} of layer {n + 1} is for "
                                   f"layer {part.annotations.get(LAYER)}, not {layer.digest}")
        try:
            tar_size = int(table.annotations[TAR_SIZE])
        except (KeyError, ValueError):
            raise BadReference(f"{what}: span table {n + 1} lacks {TAR_SIZE}") from None
        if not 0 < tar_size <= MAX_DATA_SIZE or tar_size % 512:
            raise BadReference(f"{what}: layer {n + 1} cannot be a tar of {tar_size} bytes")
        diff_id = table.annotations.get(DIFF_ID)
        if diff_id is not None:
            check_digest(diff_id)
        blobs.append(BlobRef(layer, tar_size, table.digest, layer.size, table_blob=table,
                             windows_blob=window, diff_id=diff_id))
    config = Descriptor.from_json(image.get("config"), "config")
    return ErofsdManifest(digest, config, bootstrap, tuple(blobs), index.digest)
