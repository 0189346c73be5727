"""Options several commands share."""

from __future__ import annotations

import dataclasses
import functools

import click

from ..erofs import codec
from ..erofs.builder import check_chunk_size
from ..images import ReadOptions
from ..sizes import parse_size

device_option = click.option(
    "--device", "devices", multiple=True, metavar="FILE",
    help="A blob device of a raw bootstrap, in device-table order (repeat).")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
insecure_option = click.option("--insecure", is_flag=True,
                               help="Allow plain HTTP to registries (e.g. 127.0.0.1).")
config_option = click.option(
    "--config", "config_path", envvar="EROFSD_CONFIG", default=None, metavar="FILE",
    help="The TOML config of the daemon and the snapshotter (or $EROFSD_CONFIG).")
state_dir_option = click.option(
    "--state-dir", envvar="EROFSD_STATE_DIR", default=None, metavar="DIR",
    help="Cache and state directory (default /var/lib/erofsd, or $EROFSD_STATE_DIR).")


index_option = click.option(
    "--index", default=None, metavar="DIGEST|discover",
    help="Read an ordinary image lazily through this index (erofsd index); discover: the "
         "newest one its repository lists, trusting whoever can push there.")


def read_options(command):
    """--state-dir, --domain-id, --fsid, --insecure, --mirror, --platform, --readahead,
    --index."""
    @state_dir_option
    @click.option("--domain-id", default=None, help="Read through this domain's cache volume.")
    @click.option("--fsid", default=None, help="Name of the image (default: from its bootstrap).")
    @insecure_option
    @click.option("--mirror", default=None, metavar="URL",
                  help="A static mirror serving blobs/sha256/<hex>, tried before the source.")
    @click.option("--platform", default=None, metavar="OS/ARCH",
                  help="Which manifest of an image index (default: linux and this machine).")
    @click.option("--readahead", default=None, metavar="SIZE",
                  help="Bytes fetched past a miss (default 1M; 0 turns readahead off).")
    @index_option
    @functools.wraps(command)
    def wrapper(*args, state_dir, domain_id, fsid, insecure, mirror, platform, readahead,
                index, **kwargs):
        # --state-dir on the command line asks for the cache; $EROFSD_STATE_DIR only
        # says where the cache is, for when it is used
        source = click.get_current_context().get_parameter_source("state_dir")
        options = ReadOptions(state_dir=state_dir, domain_id=domain_id, fsid=fsid,
                              insecure=insecure, mirror=mirror, platform=platform,
                              readahead=parse_size(readahead) if readahead else None,
                              through_cache=source is click.core.ParameterSource.COMMANDLINE,
                              index=index)
        return command(*args, options=options, **kwargs)
    return wrapper


def blob_options(command):
    """--chunk-size, --compression, --frame-size: how build and convert write blobs."""
    @click.option("--chunk-size", default="1M", show_default=True,
                  help="Chunk size: a power of two >= 4096 (e.g. 1M, 64K).")
    @click.option("--compression", default=f"zstd:{codec.DEFAULT_LEVEL}", show_default=True,
                  metavar="zstd[:LEVEL]|none",
                  help="How each frame of chunks travels; none writes uncompressed blobs "
                       "(the format before compression).")
    @click.option("--frame-size", default="64K",
                  show_default=True, metavar="SIZE",
                  help="Chunks smaller than this are packed together into compressed frames "
                       "of up to this size; 0: each chunk alone.")
    @functools.wraps(command)
    def wrapper(*args, chunk_size, compression, frame_size, **kwargs):
        coding = codec.parse_compression(compression)
        if coding is not None:
            coding = dataclasses.replace(coding, frame_size=parse_size(frame_size))
        return command(*args, chunk_size=check_chunk_size(parse_size(chunk_size)),
                       compression=coding, **kwargs)
    return wrapper
