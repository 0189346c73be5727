"""Commands that read an image: inspect, ls, cat, extract, export, check."""

from __future__ import annotations

import json
import os
import stat
import sys
import time

import click

from ..erofs.check import check_image
from ..erofs.chunktable import ChunkTable
from ..erofs.extract import extract
from ..erofs.image import file_kind
from ..errors import InvalidArgument
from ..images import OpenedImage, ReadOptions, export_kernel_files, open_image
from ..oci.image import BlobRef
from ..progress import progress_bar
from ..sizes import format_size
from . import EXIT_ERROR, cli
from .options import device_option, json_option, quiet_option, read_options


def _show(raw: bytes) -> str:
    return raw.decode(errors="backslashreplace")


@cli.command()
@click.argument("image")
@device_option
@json_option
@read_options
def inspect(image: str, devices: tuple[str, ...], as_json: bool, options: ReadOptions) -> None:
    """Show the superblock, devices and counts of an image."""
    with open_image(image, devices, options) as opened:
        info = describe(opened)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from ..views import print_inspect
    print_inspect(info)


def describe(opened: OpenedImage) -> dict:
    img = opened.image
    sb = img.superblock
    counts = {"directories": 0, "files": 0, "symlinks": 0, "others": 0, "file_bytes": 0,
              "inodes": 0}
    seen: set[int] = set()
    for _, inode in img.walk():
        if inode.nid in seen:
            continue
        seen.add(inode.nid)
        counts["inodes"] += 1
        if inode.is_dir:
            counts["directories"] += 1
        elif inode.is_reg:
            counts["files"] += 1
            counts["file_bytes"] += inode.size
        elif inode.is_symlink:
            counts["symlinks"] += 1
        else:
            counts["others"] += 1
    info: dict = {
        "image": opened.name,
        "superblock": {
            "block_size": sb.block_size, "root_nid": sb.root_nid, "inos": sb.inos,
            "blocks": sb.blocks, "build_time": sb.build_time,
            "feature_compat": sb.feature_compat, "feature_incompat": sb.feature_incompat,
            "uuid": sb.uuid.hex(), "meta_blkaddr": sb.meta_blkaddr,
            "xattr_blkaddr": sb.xattr_blkaddr,
        },
        "devices": [{"device": i, "tag": slot.tag_text, "blocks": slot.blocks}
                    for i, slot in enumerate(img.slots, start=1)],
        "counts": counts,
    }
    if opened.manifest is not None:
        m = opened.manifest
        info["manifest"] = m.digest
        if m.index_digest:
            info["index"] = m.index_digest
        info["bootstrap"] = {"digest": m.bootstrap.digest, "size": m.bootstrap.size}
        tables = opened.chunk_tables() or [None] * len(m.blobs)
        info["blobs"] = [_describe_blob(b, t) for b, t in zip(m.blobs, tables, strict=True)]
    if opened.volume is not None:
        info["volume"] = opened.volume
    return info


def _describe_blob(ref: BlobRef, table: ChunkTable | None) -> dict:
    """A blob as it is stored (``size``, compressed or not) and as it is cached (``data_size``)."""
    info = {"digest": ref.digest, "size": ref.size, "data_size": ref.data_size,
            "compression": "gzip" if ref.table_blob else "zstd" if ref.compressed else "none",
            "chunk_table": ref.table_digest}
    if table is not None:
        info["chunks"] = len(table.entries)
        info["frames"] = len(table.frames)
    return info


@cli.command(name="ls")
@click.argument("image")
@click.argument("path", default="/")
@click.option("-l", "long", is_flag=True, help="Long listing (mode, links, owner, size, time).")
@device_option
@read_options
def ls_command(image: str, path: str, long: bool, devices: tuple[str, ...],
               options: ReadOptions) -> None:
    """List a directory (or show one entry) of an image."""
    with open_image(image, devices, options) as opened:
        img = opened.image
        inode = img.lookup(path)
        if inode.is_dir:
            rows = [(d.name, img.inode(d.nid)) for d in img.listdir(inode)]
        else:
            rows = [(os.fsencode(path.rstrip("/").rsplit("/", 1)[-1]), inode)]
        for name, child in rows:
            if not long:
                click.echo(_show(name))
                continue
            st = child.stat()
            size = f"{os.major(st.rdev)}, {os.minor(st.rdev)}" if st.rdev else str(st.size)
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.mtime))
            line = (f"{stat.filemode(st.mode)} {st.nlink:>3} {st.uid:>5} {st.gid:>5} "
                    f"{size:>10} {when} {_show(name)}")
            if child.is_symlink:
                line += f" -> {_show(img.readlink(child))}"
            click.echo(line)


@cli.command()
@click.argument("image")
@click.argument("path")
@device_option
@read_options
def cat(image: str, path: str, devices: tuple[str, ...], options: ReadOptions) -> None:
    """Write a file of an image to standard output."""
    with open_image(image, devices, options) as opened:
        img = opened.image
        inode = img.lookup(path)
        if not inode.is_reg:
            raise InvalidArgument(f"{path} is a {file_kind(inode.mode)}, not a regular file")
        out = sys.stdout.buffer
        for offset in range(0, inode.size, 1 << 20):
            out.write(img.read(inode, offset, 1 << 20))
        out.flush()


@cli.command(name="extract")
@click.argument("image")
@click.argument("dest")
@device_option
@quiet_option
@read_options
def extract_command(image: str, dest: str, devices: tuple[str, ...], quiet: bool,
                    options: ReadOptions) -> None:
    """Extract the whole tree of an image into DEST (new or empty)."""
    with open_image(image, devices, options) as opened:
        total = sum(i.size for _, i in opened.image.walk() if i.is_reg)
        with progress_bar("extracting", total, quiet) as advance, opened.fill_ahead():
            report = extract(opened.image, dest, progress=advance)
    for skipped in report.skipped_xattrs:
        click.echo(f"erofsd: warning: xattr not set (no permission or support): {skipped}",
                   err=True)
    if not quiet:
        click.echo(f"extracted {report.entries} entries, {format_size(report.file_bytes)}")


@cli.command(name="export")
@click.argument("image")
@click.argument("dest")
@quiet_option
@json_option
@read_options
def export_command(image: str, dest: str, quiet: bool, as_json: bool,
                   options: ReadOptions) -> None:
    """Write the bootstrap and every blob's data, uncompressed and verified, into DEST.

    What a kernel mount or fsck.erofs takes without the daemon (mount(8)
    wants each blob on a loop device; the command it prints does that).
    """
    with open_image(image, (), options) as opened:
        total = sum(t.data_size for t in opened.chunk_tables() or ())
        with progress_bar("exporting", total, quiet or as_json) as advance:
            bootstrap, devices = export_kernel_files(opened, dest, advance)
    if as_json:
        click.echo(json.dumps({"bootstrap": bootstrap, "devices": devices}, indent=2))
    elif not quiet:
        options_text = ",".join(f"device=$(losetup -f --show -r {d})" for d in devices)
        click.echo(f"exported {len(devices)} blob(s) to {dest}; mount with\n"
                   f"  mount -t erofs -o ro,{options_text} {bootstrap} MOUNTPOINT")


@cli.command()
@click.argument("image")
@device_option
@quiet_option
@json_option
@read_options
def check(image: str, devices: tuple[str, ...], quiet: bool, as_json: bool,
          options: ReadOptions) -> None:
    """Walk all metadata and verify every chunk against its digest."""
    with open_image(image, devices, options) as opened:
        tables = opened.chunk_tables()
        total = sum(t.data_size for t in tables) if tables else 0
        with progress_bar("verifying", total, quiet or as_json) as advance:
            report = check_image(opened.image, tables, opened.blobs, advance, opened.stored)
    if as_json:
        click.echo(json.dumps({**vars(report), "ok": report.ok}, indent=2))
    else:
        for problem in report.problems:
            click.echo(f"erofsd: problem: {problem}", err=True)
        verified = (f", {report.chunks_verified} chunks ({format_size(report.bytes_verified)}) "
                    "verified") if tables is not None else ", all file data read"
        if report.frames_verified:
            verified += (f" from {report.frames_verified} stored frames "
                         f"({format_size(report.stored_bytes_verified)})")
        click.echo(f"{'ok' if report.ok else 'FAILED'}: {report.inodes} inodes "
                   f"({report.files} files, {report.directories} directories){verified}")
    if not report.ok:
        sys.exit(EXIT_ERROR)
