"""Images for the benchmarks: built into a layout, and pushed to a docker-registry on 127.0.0.1."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path

from erofsd.erofs.builder import Layer
from erofsd.erofs.codec import Compression
from erofsd.erofs.dirlayer import read_dir_layer
from erofsd.images import open_image
from erofsd.localregistry import Registry
from erofsd.oci.copy import push
from erofsd.oci.image import build_to_layout
from erofsd.oci.reference import LayoutRef, parse_layout_ref, parse_registry_ref
from erofsd.oci.transport import Transport


def build_image(layout: Path, name: str, layers: list[Path], chunk_size: int = 1 << 20,
                compression: Compression | None = Compression()) -> str:
    """An erofsd image of ``layers`` (directories) tagged ``name`` in ``layout``."""
    trees = [Layer(*read_dir_layer(p), str(p)) for p in layers]
    build_to_layout(trees, LayoutRef(str(layout), name), chunk_size=chunk_size,
                    compression=compression)
    return f"oci:{layout}:{name}"


@dataclasses.dataclass(frozen=True)
class BlobBytes:
    stored: int  # what the registry holds and a full read fetches
    cached: int  # what the cache keeps: the data, uncompressed, then the chunk table


@contextlib.contextmanager
def pushed_image(name: str, layers: list[Path], chunk_size: int = 1 << 20,
                 compression: Compression | None = Compression()) -> Iterator[tuple[str, int]]:
    """(docker:// reference, bytes of its blobs) of one image built from ``layers``."""
    with pushed_images({name: layers}, chunk_size, compression) as (refs, sizes):
        yield refs[name], sizes["base"].stored + sizes[name].stored


@contextlib.contextmanager
def pushed_images(images: dict[str, list[Path]], chunk_size: int = 1 << 20,
                  compression: Compression | None = Compression()
                  ) -> Iterator[tuple[dict[str, str], dict[str, BlobBytes]]]:
    """Several images in one registry: (references by name, blob sizes by name).

    Sizes: "base" is the first layer's blob, shared by every image; each
    image's own entry is the size of its other blobs.
    """
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-reg-") as tmp:
        root = Path(tmp)
        registry = Registry(root / "registry")
        try:
            refs, sizes = {}, {}
            for name, layers in images.items():
                build_image(root / "layout", name, layers, chunk_size, compression)
                refs[name] = registry.ref(f"bench/{name}", "v1")
                push(parse_layout_ref(f"oci:{root / 'layout'}:{name}"),
                     parse_registry_ref(refs[name]), Transport(insecure=True))
                with open_image(f"oci:{root / 'layout'}:{name}") as opened:
                    blobs = opened.manifest.blobs
                    sizes["base"] = BlobBytes(blobs[0].size, blobs[0].cache_size)
                    sizes[name] = BlobBytes(sum(b.size for b in blobs[1:]),
                                            sum(b.cache_size for b in blobs[1:]))
            yield refs, sizes
        finally:
            registry.stop()
