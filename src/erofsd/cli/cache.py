"""erofsd cache ls / gc."""

from __future__ import annotations

import dataclasses
import json

import click

from ..cache.store import BlobCache
from ..sizes import format_size, parse_size
from . import cli
from .options import json_option, state_dir_option


@cli.group()
def cache() -> None:
    """Look at and clean the blob cache."""


@cache.command(name="ls")
@state_dir_option
@json_option
def cache_ls(state_dir: str | None, as_json: bool) -> None:
    """Volumes and their blobs: sizes, bytes cached, bytes fetched, in use."""
    volumes = BlobCache(state_dir).list()
    if as_json:
        click.echo(json.dumps({"volumes": [
            {"volume": v.volume, "path": v.path,
             "blobs": [dataclasses.asdict(b) for b in v.blobs]} for v in volumes]}, indent=2))
        return
    from ..views import print_cache
    print_cache(volumes)


@cache.command(name="gc")
@state_dir_option
@click.option("--max-size", default=None, metavar="SIZE",
              help="Only remove enough to bring the cache under SIZE (e.g. 10G).")
@json_option
def cache_gc(state_dir: str | None, max_size: str | None, as_json: bool) -> None:
    """Remove unreferenced blobs, least recently used first; never one in use."""
    report = BlobCache(state_dir).gc(parse_size(max_size) if max_size else None)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2))
        return
    for removed in report.removed:
        click.echo(f"removed {removed}")
    click.echo(f"freed {format_size(report.freed_bytes)}; cache now "
               f"{format_size(report.total_after)}; {report.kept_in_use} blob(s) in use kept")
