"""An ordinary image, indexed: its gzip layers read once into a tar index and span tables.

Nothing of the image changes. Each gzip layer is read once, verified
against its digest and its diff_id, parsed as a tar into one merged
512-byte-block bootstrap whose device k is layer k's uncompressed tar
(erofs/tarindex.py), and cut meanwhile into spans (erofs/gzipspans.py):
the span table of a layer says how to fetch, inflate and verify any range
of its tar lazily, from the unchanged blob.

A zstd layer has no place to enter it mid-stream, and an uncompressed one
needs no index: both are refused, naming the layer, with the advice to
convert the image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..erofs.chunktable import ChunkTable, span_table
from ..erofs.tarindex import TarIndexBuilder
from .descriptor import Descriptor
from .layerstream import LayerStream, read_checked
from .ordinary import read_ordinary
from .source import ResolvedImage

# uncompressed bytes per span, at least: 32 KiB cuts at every deflate block of gzip -6 or
# -9 on text (about 80 KiB of output each), so a read fetches the blocks it needs (B11)
DEFAULT_SPAN = 32 << 10


@dataclasses.dataclass(frozen=True)
class LayerIndex:
    layer: Descriptor  # the gzip blob, as the image's manifest has it
    diff_id: str
    tar_size: int
    table: ChunkTable  # version 3: the spans
    windows: bytes  # the window blob of the table's checkpoints


@dataclasses.dataclass(frozen=True)
class ImageIndex:
    subject: Descriptor  # the image's manifest
    bootstrap: bytes
    layers: tuple[LayerIndex, ...]
    span_size: int


def index_image(image: ResolvedImage, subject: Descriptor, *, span_size: int = DEFAULT_SPAN,
                progress: Callable[[int], None] | None = None,
                on_total: Callable[[int], None] | None = None) -> ImageIndex:
    """Read every layer of ``image`` once; its index, or an ErofsdError naming the layer.
    ``on_total`` hears the compressed bytes to read before ``progress`` hears any."""
    ordinary = read_ordinary(image, image.reference)
    if on_total:
        on_total(sum(layer.size for layer in ordinary.layers))
    streams = []
    for n, layer in enumerate(ordinary.layers):
        diff_id = ordinary.diff_ids[n] if ordinary.diff_ids else None
        streams.append(LayerStream(image.source, layer, diff_id, progress=progress,
                                   span_size=span_size))
    builder = TarIndexBuilder()
    layers = []
    for n, stream in enumerate(streams):
        name = f"{n + 1}/{len(streams)} ({stream.descriptor.digest})"
        # the stream checks the tar against the config's diff_id: the builder need not hash
        device = read_checked(stream, name,
                              lambda s, name=name: builder.add_layer(name, s, s.diff_id))
        assert stream.indexer is not None
        layers.append(LayerIndex(stream.descriptor, device.diff_id, device.size,
                                 *span_table(stream.indexer.spans)))
    index = builder.finish()
    return ImageIndex(subject, index.bootstrap, tuple(layers), span_size)
