"""erofsd images built from directories for tests, and kernel mounts of their files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from erofsd.erofs.builder import Layer
from erofsd.erofs.dirlayer import read_dir_layer
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


def build_layers(layer_dirs, out: Path, tag: str = "latest", chunk_size: int = 1 << 20):
    layers = []
    for d in layer_dirs:
        tree, contents = read_dir_layer(d)
        layers.append(Layer(tree, contents, str(d)))
    return build_to_layout(layers, LayoutRef(str(out), tag), chunk_size=chunk_size)
