"""erofsd index."""

from __future__ import annotations

import json

import click

from ..errors import InvalidArgument
from ..oci.indexartifact import index_reference
from ..oci.indexer import DEFAULT_SPAN
from ..progress import progress_bar
from ..sizes import format_size, parse_size
from . import cli
from .options import insecure_option, json_option, quiet_option

MIN_SPAN = 16 << 10  # below that the index outgrows what it saves


@cli.command()
@click.argument("image")
@click.argument("destination", required=False)
@click.option("--span-size", default=f"{DEFAULT_SPAN >> 10}K", show_default=True,
              metavar="SIZE", help="Uncompressed bytes per span, at least (a lazy read "
              "fetches whole spans; a span ends at a deflate block).")
@click.option("--platform", default=None, metavar="OS/ARCH",
              help="Which manifest of an image index (default: linux and this machine).")
@insecure_option
@json_option
@quiet_option
def index(image: str, destination: str | None, span_size: str, platform: str | None,
          insecure: bool, as_json: bool, quiet: bool) -> None:
    """Index an ordinary image's gzip layers so that it mounts lazily, unconverted.

    Each layer is read once; the image does not change. The index (a
    bootstrap over the layers' tars, and per layer a span table and the
    windows its spans are entered with, fetched as reads need them) is an OCI
    artifact whose subject is the image, written beside it (the same
    repository or layout) or to DESTINATION, and listed under the referrers
    tag schema (sha256-<hex>). Its digest is printed: pin it when mounting.
    """
    span = parse_size(span_size)
    if span < MIN_SPAN:
        raise InvalidArgument(f"--span-size {span_size} is below {format_size(MIN_SPAN)}")
    with progress_bar("indexing", None, quiet or as_json) as bar:
        report = index_reference(image, destination, span_size=span, insecure=insecure,
                                 platform=platform, progress=bar,
                                 on_total=bar.set_total if bar else None)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    elif not quiet:
        image_bytes = max(report.image_bytes, 1)
        click.echo(f"indexed {image}: {report.layers} layer(s), "
                   f"{format_size(report.image_bytes)}; index {report.index.digest} in "
                   f"{report.destination} ({format_size(report.total_bytes)}, "
                   f"{100 * report.total_bytes / image_bytes:.1f}% of the image; a mount "
                   f"fetches {100 * report.mount_bytes / image_bytes:.1f}% before reading)")
