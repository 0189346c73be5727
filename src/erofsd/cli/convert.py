"""erofsd convert."""

from __future__ import annotations

import time

import click

from ..cache.store import default_state_dir
from ..erofs.codec import Compression
from ..oci.convert import BlobSettings
from ..oci.convert import convert as convert_image
from ..progress import progress_bar
from ..sizes import format_size
from . import cli
from .options import blob_options, insecure_option, quiet_option, state_dir_option


@cli.command()
@click.argument("source")
@click.argument("destination")
@click.option("--platform", default=None, metavar="OS/ARCH",
              help="Which manifest of an image index (default: linux and this machine).")
@blob_options
@click.option("--rootless", is_flag=True,
              help="The tree is for rootless containers: refuse device nodes.")
@click.option("--twin", is_flag=True,
              help="DESTINATION names an index of the ordinary image and the erofsd one.")
@insecure_option
@state_dir_option
@quiet_option
def convert(source: str, destination: str, platform: str | None, chunk_size: int,
            compression: Compression | None, rootless: bool, twin: bool, insecure: bool,
            state_dir: str | None, quiet: bool) -> None:
    """Convert an OCI or Docker image into an erofsd image, one blob per layer.

    SOURCE and DESTINATION are oci:DIR[:TAG] or docker://HOST/REPO:TAG.
    Layers converted before (remembered in the state directory) are not
    read again when the destination already has their blobs. With --twin,
    DESTINATION (in SOURCE's repository) names an index of the ordinary
    image and its erofsd twin: one reference every node can run.
    """
    started = time.monotonic()
    with progress_bar("converting", None, quiet) as bar:
        report = convert_image(source, destination, state_dir=state_dir or default_state_dir(),
                               platform=platform, insecure=insecure, twin=twin, progress=bar,
                               settings=BlobSettings(chunk_size, compression, rootless),
                               on_total=bar.set_total if bar else None)
    if not quiet:
        click.echo(f"converted {source} to {destination} ({report.manifest.digest}): "
                   f"{report.layers} layer(s), {report.converted} converted, {report.reused} "
                   f"reused; {format_size(report.file_bytes)} of files in "
                   f"{time.monotonic() - started:.1f}s")
        if report.twin_index:
            click.echo(f"{destination} now names an index of the ordinary image and its "
                       f"erofsd twin ({report.twin_index.digest})")
