"""erofsd images built from directories for tests, and kernel mounts of their files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from erofsd.erofs.builder import Layer
from erofsd.erofs.codec import Compression
from erofsd.erofs.dirlayer import read_dir_layer
from erofsd.images import export_kernel_files, open_image
from erofsd.kernel.mount import mount_erofs, umount
from erofsd.oci.image import build_to_layout
from erofsd.oci.reference import LayoutRef


@contextlib.contextmanager
def kernel_mounted(bootstrap: str, devices: list[str]) -> Iterator[Path]:
    target = tempfile.mkdtemp(prefix="erofsd-test-mnt-")
    mount_erofs(bootstrap, target, devices)
    try:
        yield Path(target)
    finally:
        umount(target)
        os.rmdir(target)


def build_layers(layer_dirs, out: Path, tag: str = "latest", chunk_size: int = 1 << 20,
                 compression: Compression | None = Compression()):
    layers = []
    for d in layer_dirs:
        tree, contents = read_dir_layer(d)
        layers.append(Layer(tree, contents, str(d)))
    return build_to_layout(layers, LayoutRef(str(out), tag), chunk_size=chunk_size,
                           compression=compression)


def kernel_files(ref: str, dest: Path) -> tuple[str, list[str]]:
    """An image's bootstrap and blob data as files the kernel and fsck.erofs take."""
    with open_image(ref) as opened:
        return export_kernel_files(opened, str(dest))


def as_legacy(layout_dir: Path, tag: str, legacy_tag: str) -> str:
    """The image ``tag`` as releases before containerd support wrote it: the bootstrap first,
    media types of erofsd's own, no snapshot annotations. Returns its oci: reference."""
    import json

    from erofsd.oci.descriptor import Descriptor, canonical_json
    from erofsd.oci.layout import OciLayout
    from erofsd.oci.mediatypes import (
        BLOB_CHUNK_TABLE,
        BLOB_DATA_SIZE,
        LEGACY_BLOB,
        LEGACY_BOOTSTRAP,
        OCI_MANIFEST,
    )
    layout = OciLayout.open(layout_dir)
    manifest = json.loads(layout.read_blob(layout.resolve(tag).digest))
    *blobs, bootstrap = manifest["layers"]
    for blob in blobs:
        blob["mediaType"] = LEGACY_BLOB
        blob["annotations"] = {k: v for k, v in blob["annotations"].items()
                               if k in (BLOB_DATA_SIZE, BLOB_CHUNK_TABLE)}
    bootstrap["mediaType"] = LEGACY_BOOTSTRAP
    bootstrap.pop("annotations", None)
    config = json.loads(layout.read_blob(manifest["config"]["digest"]))
    config["rootfs"]["diff_ids"] = [bootstrap["digest"]] + [b["digest"] for b in blobs]
    raw_config = canonical_json(config)
    manifest["config"].update(digest=layout.put_bytes(raw_config), size=len(raw_config))
    manifest["layers"] = [bootstrap, *blobs]
    raw = canonical_json(manifest)
    layout.set_tag(legacy_tag, Descriptor(OCI_MANIFEST, layout.put_bytes(raw), len(raw)))
    return f"oci:{layout_dir}:{legacy_tag}"
