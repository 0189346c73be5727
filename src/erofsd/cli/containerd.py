"""containerd commands: the snapshotter, and the pull that hands it erofsd images."""

from __future__ import annotations

import dataclasses
import json

import click

from ..config import load
from ..containerd.client import DEFAULT_ADDRESS
from ..daemon.protocol import default_socket
from . import cli
from .daemon import socket_option
from .options import config_option, index_option, insecure_option, json_option


@cli.command()
@config_option
@click.option("--root", default=None, metavar="DIR",
              help="Where snapshots live (default /var/lib/erofsd-snapshotter).")
@click.option("--address", default=None, metavar="SOCK",
              help="The socket containerd's proxy plugin names "
                   "(default /run/erofsd/snapshotter.sock).")
@socket_option
def snapshotter(config_path: str | None, root: str | None, address: str | None,
                socket_path: str | None) -> None:
    """Serve containerd's snapshots API: erofsd images lazily, other layers as overlayfs.

    containerd knows it as the snapshotter "erofsd" (a proxy plugin). Its
    mounts go through the erofsd daemon on --socket, started if none answers.
    Options given here win over the config file.
    """
    from ..snapshotter.main import run
    config = load(config_path)
    changes = {"snapshotter_root": root, "snapshotter_address": address,
               "socket": socket_path or (None if config_path else default_socket())}
    run(dataclasses.replace(config, **{k: v for k, v in changes.items() if v}))


@cli.group()
def containerd() -> None:
    """Work with containerd: pull erofsd images for the erofsd snapshotter."""


@containerd.command()
@click.argument("image")
@click.option("--address", default=DEFAULT_ADDRESS, show_default=True, metavar="SOCK",
              help="containerd's socket.")
@click.option("--namespace", "-n", default="default", show_default=True)
@click.option("--snapshotter", "snapshotter_name", default="erofsd", show_default=True,
              metavar="NAME", help="The snapshotter's name in containerd's config.")
@index_option
@insecure_option
@socket_option
@json_option
def pull(image: str, address: str, namespace: str, snapshotter_name: str, index: str | None,
         insecure: bool, socket_path: str | None, as_json: bool) -> None:
    """Record IMAGE (docker://HOST/REPO:TAG, an erofsd image) in containerd, lazily.

    No layer is downloaded: the snapshotter mounts the image through the
    erofsd daemon. Then: ctr run --snapshotter erofsd HOST/REPO:TAG ID CMD.
    An ordinary image runs lazily too through its index (erofsd index):
    --index DIGEST, or --index discover.
    """
    from ..containerd.pull import pull as pull_image
    from ..daemon.client import DaemonClient
    report = pull_image(image, address=address, namespace=namespace,
                        snapshotter=snapshotter_name, insecure=insecure, index=index)
    view = dataclasses.asdict(report)
    client = DaemonClient(socket_path or default_socket())
    try:
        if client.running():
            view["mounts"] = [m for m in client.status()["mounts"]
                              if m.get("manifest_digest") == report.manifest]
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(f"pulled {image} as {report.name} ({report.manifest[:19]}…): "
               f"{report.layers} layer(s), {report.prepared} prepared, {report.present} "
               f"already there; {report.fetched_bytes} bytes fetched (manifest and config)")
    for mount in view.get("mounts", []):
        click.echo(f"mounted lazily at {mount['mountpoint']} as {mount['name']} "
                   f"(mode {mount['mode']}, volume {mount['volume']})")
