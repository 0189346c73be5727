"""Daemon commands: daemon, mount, umount, status, metrics, stop."""

from __future__ import annotations

import json

import click

from ..cache.store import default_state_dir
from ..daemon.client import DaemonClient, ensure_daemon
from ..daemon.protocol import MODES, default_socket
from . import cli
from .options import (
    config_option,
    index_option,
    insecure_option,
    json_option,
    state_dir_option,
)

socket_option = click.option(
    "--socket", "socket_path", envvar="EROFSD_SOCKET", default=None, metavar="PATH",
    help="The daemon's control socket (default /run/erofsd/erofsd.sock, or $EROFSD_SOCKET).")


def _client(socket_path: str | None) -> DaemonClient:
    return DaemonClient(socket_path or default_socket())


@cli.command()
@config_option
@state_dir_option
@socket_option
def daemon(config_path: str | None, state_dir: str | None, socket_path: str | None) -> None:
    """Run the erofsd daemon in the foreground (logs go to stderr as JSON lines).

    Options given here win over the config file.
    """
    from ..config import load
    from ..daemon.main import run
    config = load(config_path)
    run(state_dir or (config.state_dir if config_path else default_state_dir()),
        socket_path or (config.socket if config_path else default_socket()),
        cache_max_size=config.cache_max_size, auth_file=config.auth_file)


@cli.command()
@click.argument("image")
@click.argument("mountpoint")
@click.option("--fsid", default=None, help="Name of the image (default: from its bootstrap).")
@click.option("--domain-id", default=None, help="Share cached blobs with this domain.")
@click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True,
              help="Data path: auto picks fanotify, then fscache, then fuse, where each works.")
@click.option("--mirror", default=None, metavar="URL", help="A static blob mirror to try first.")
@click.option("--prefetch", is_flag=True,
              help="Fetch the whole image in the background once mounted (not in fscache mode).")
@index_option
@insecure_option
@socket_option
@state_dir_option
@json_option
def mount(image: str, mountpoint: str, fsid: str | None, domain_id: str | None, mode: str,
          mirror: str | None, prefetch: bool, index: str | None, insecure: bool,
          socket_path: str | None, state_dir: str | None, as_json: bool) -> None:
    """Mount IMAGE at MOUNTPOINT, lazily (starts the daemon if none is running).

    --state-dir only matters when this command starts the daemon.
    """
    client = _client(socket_path)
    pid = ensure_daemon(client.socket_path, state_dir or default_state_dir())
    if pid is not None:
        click.echo(f"started the erofsd daemon (pid {pid}) on {client.socket_path}", err=True)
    fields = {"fsid": fsid, "domain_id": domain_id, "mode": mode, "insecure": insecure,
              "mirror": mirror, "prefetch": prefetch, "index": index}
    view = client.mount(image, mountpoint, **{k: v for k, v in fields.items() if v})
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        click.echo(f"mounted {view['image']} at {view['mountpoint']} as {view['name']} "
                   f"(mode {view['mode']}, volume {view['volume']})")


@cli.command()
@click.argument("mountpoint")
@click.option("--lazy", is_flag=True, help="Detach now even if busy (FUSE mounts only).")
@socket_option
def umount(mountpoint: str, lazy: bool, socket_path: str | None) -> None:
    """Unmount an image that erofsd mounted."""
    result = _client(socket_path).umount(mountpoint, lazy)
    click.echo(f"unmounted {result['mountpoint']} ({result['name']})")


@cli.command()
@socket_option
@json_option
def status(socket_path: str | None, as_json: bool) -> None:
    """Mounts, domains and cookies (cached blobs) of the daemon."""
    view = _client(socket_path).status()
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    from ..views import print_status
    print_status(view)


@cli.command()
@socket_option
def metrics(socket_path: str | None) -> None:
    """The daemon's figures in the Prometheus text format."""
    click.echo(_client(socket_path).metrics(), nl=False)


@cli.command()
@click.option("--keep-mounts", is_flag=True,
              help="Leave mounts in place for the next daemon instead of unmounting them.")
@socket_option
def stop(keep_mounts: bool, socket_path: str | None) -> None:
    """Stop the daemon: unmount everything (refused while busy), or --keep-mounts."""
    result = _client(socket_path).stop(keep_mounts)
    kept = result.get("kept") or []
    click.echo("daemon stopped" + (f"; left mounted for the next daemon: {', '.join(kept)}"
                                   if kept else "; nothing left mounted"))
