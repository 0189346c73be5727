"""A docker-registry on 127.0.0.1 with an image pushed to it, for the benchmarks."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from erofsd.erofs.builder import Layer
from erofsd.erofs.dirlayer import read_dir_layer
from erofsd.localregistry import Registry
from erofsd.oci.copy import push
from erofsd.oci.image import build_to_layout
from erofsd.oci.reference import LayoutRef, parse_layout_ref, parse_registry_ref
from erofsd.oci.transport import Transport


@contextlib.contextmanager
def pushed_image(name: str, layers: list[Path], chunk_size: int = 1 << 20
                 ) -> Iterator[tuple[str, int]]:
    """(docker:// reference, total blob bytes) of an image built from ``layers``."""
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-reg-") as tmp:
        root = Path(tmp)
        registry = Registry(root / "registry")
        try:
            trees = [Layer(*read_dir_layer(p), str(p)) for p in layers]
            build_to_layout(trees, LayoutRef(str(root / "layout"), name), chunk_size=chunk_size)
            ref = registry.ref(f"bench/{name}", "v1")
            push(parse_layout_ref(f"oci:{root / 'layout'}:{name}"), parse_registry_ref(ref),
                 Transport(insecure=True))
            blobs = sum(p.stat().st_size for p in (root / "layout" / "blobs" / "sha256").iterdir())
            yield ref, blobs
        finally:
            registry.stop()
