"""erofsd build."""

from __future__ import annotations

import time

import click

from ..erofs.builder import Layer, total_file_bytes
from ..erofs.codec import Compression
from ..erofs.dirlayer import read_dir_layer
from ..oci.image import build_to_layout
from ..oci.reference import LayoutRef, check_tag, parse_layout_ref
from ..progress import progress_bar
from ..sizes import format_size
from . import cli
from .options import blob_options, quiet_option


@cli.command()
@click.argument("layers", nargs=-1, required=True, metavar="LAYER_DIR... OUT")
@click.option("--tag", "-t", default=None, help="Tag to write (default: latest).")
@blob_options
@quiet_option
def build(layers: tuple[str, ...], tag: str | None, chunk_size: int,
          compression: Compression | None, quiet: bool) -> None:
    """Build an image from directory layers into an OCI layout OUT.

    One blob per layer, one merged tree: a later layer replaces an earlier
    one's entries, and OCI whiteouts (.wh.NAME, .wh..wh..opq) apply.
    """
    if len(layers) < 2:
        raise click.UsageError("give at least one LAYER_DIR and then OUT")
    *sources, out = layers
    ref = parse_layout_ref(out if out.startswith("oci:") else f"oci:{out}")
    if tag is not None:
        ref = LayoutRef(ref.path, check_tag(tag))
    started = time.monotonic()
    trees = [Layer(*read_dir_layer(source), source) for source in sources]
    total = total_file_bytes(trees)
    with progress_bar("building", total, quiet) as advance:
        descriptor = build_to_layout(trees, ref, chunk_size=chunk_size, progress=advance,
                                     compression=compression)
    if not quiet:
        click.echo(f"built {ref} ({descriptor.digest}) from {len(sources)} layer(s), "
                   f"{format_size(total)} of file data in {time.monotonic() - started:.2f}s")
