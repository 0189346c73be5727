"""erofsd push and pull: copy images between a layout and a registry."""

from __future__ import annotations

import click

from ..errors import BadReference
from ..oci.copy import pull as pull_image
from ..oci.copy import push as push_image
from ..oci.copy import total_size
from ..oci.layout import OciLayout
from ..oci.reference import LayoutRef, RegistryRef, parse_reference
from ..oci.source import resolve_image
from ..oci.transport import Transport
from ..progress import progress_bar
from ..sizes import format_size
from . import cli
from .options import insecure_option, quiet_option


def _expect(text: str, kind: type, example: str):
    ref = parse_reference(text)
    if not isinstance(ref, kind):
        raise BadReference(f"{text!r} should be {example}")
    return ref


@cli.command()
@click.argument("source")
@click.argument("destination")
@insecure_option
@quiet_option
def push(source: str, destination: str, insecure: bool, quiet: bool) -> None:
    """Copy an image from a layout to a registry.

    SOURCE is oci:DIR[:TAG], DESTINATION docker://HOST/REPO:TAG.
    """
    src: LayoutRef = _expect(source, LayoutRef, "oci:DIR[:TAG]")
    dst: RegistryRef = _expect(destination, RegistryRef, "docker://HOST/REPO:TAG")
    layout = OciLayout.open(src.path)
    total = total_size(layout.read_blob(layout.resolve(src.tag).digest, "manifest"))
    transport = Transport(insecure=insecure)
    try:
        with progress_bar("pushing", total, quiet) as advance:
            report = push_image(src, dst, transport, advance)
    finally:
        transport.close()
    if not quiet:
        click.echo(f"pushed {src} to {dst} ({report.manifest}): {report.copied} blob(s) "
                   f"uploaded ({format_size(report.bytes_copied)}), {report.skipped} already there")


@cli.command()
@click.argument("source")
@click.argument("destination")
@insecure_option
@click.option("--platform", default=None, metavar="OS/ARCH",
              help="Which manifest of an image index (default: linux and this machine).")
@quiet_option
def pull(source: str, destination: str, insecure: bool, platform: str | None,
         quiet: bool) -> None:
    """Copy an image from a registry to a layout.

    SOURCE is docker://HOST/REPO:TAG (or @sha256:...), DESTINATION oci:DIR[:TAG].
    """
    src: RegistryRef = _expect(source, RegistryRef, "docker://HOST/REPO:TAG")
    dst: LayoutRef = _expect(destination, LayoutRef, "oci:DIR[:TAG]")
    transport = Transport(insecure=insecure)
    try:
        total = total_size(resolve_image(source, transport=transport, platform=platform).manifest)
        with progress_bar("pulling", total, quiet) as advance:
            report = pull_image(src, dst, transport, advance, platform)
    finally:
        transport.close()
    if not quiet:
        click.echo(f"pulled {src} to {dst} ({report.manifest}): {report.copied} blob(s) "
                   f"downloaded ({format_size(report.bytes_copied)}), {report.skipped} already "
                   "there")
