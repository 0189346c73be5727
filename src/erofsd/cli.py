"""The erofsd command line: a thin client of the library.

Every command turns a user mistake into one line on stderr and a non-zero
exit (``ErofsdError`` and ``OSError`` are caught at one boundary, in
``_Group.invoke``); a traceback means a bug in erofsd.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time

import click

from . import __version__
from .erofs.builder import DEFAULT_CHUNK_SIZE, Layer, check_chunk_size, total_file_bytes
from .erofs.check import check_image
from .erofs.dirlayer import read_dir_layer
from .erofs.extract import extract
from .erofs.image import file_kind
from .errors import ErofsdError, InvalidArgument
from .images import OpenedImage, open_image
from .oci.image import build_to_layout
from .oci.reference import check_tag, parse_layout_ref
from .progress import progress_bar
from .sizes import format_size, parse_size

EXIT_ERROR = 1


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ErofsdError as e:
            _fail(str(e))
        except BrokenPipeError:
            sys.stderr.close()  # a reader like `head` went away: not an error
            sys.exit(0)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            _fail(f"{where}{e.strerror or e}")
        except KeyboardInterrupt:
            _fail("interrupted", code=130)


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"erofsd: error: {message}", err=True)
    sys.exit(code)


def _show(raw: bytes) -> str:
    return raw.decode(errors="backslashreplace")


device_option = click.option("--device", "devices", multiple=True, metavar="FILE",
                             help="A blob device of a raw bootstrap, in device-table order "
                                  "(repeat).")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="erofsd")
def cli() -> None:
    """erofsd: lazy-loading EROFS container images with shared cache domains.

    IMAGE is oci:DIR[:TAG] (an OCI image layout; the tag defaults to
    latest) or a raw EROFS bootstrap file plus --device FILE for each blob.
    """


@cli.command()
@click.argument("layers", nargs=-1, required=True, metavar="LAYER_DIR... OUT")
@click.option("--tag", "-t", default=None, help="Tag to write (default: latest).")
@click.option("--chunk-size", default=str(DEFAULT_CHUNK_SIZE), show_default=True,
              help="Chunk size: a power of two >= 4096 (e.g. 1M, 64K).")
@quiet_option
def build(layers: tuple[str, ...], tag: str | None, chunk_size: str, quiet: bool) -> None:
    """Build an image from directory layers into an OCI layout OUT.

    One blob per layer, one merged tree: a later layer replaces an earlier
    one's entries, and OCI whiteouts (.wh.NAME, .wh..wh..opq) apply.
    """
    if len(layers) < 2:
        raise click.UsageError("give at least one LAYER_DIR and then OUT")
    *sources, out = layers
    ref = parse_layout_ref(out if out.startswith("oci:") else f"oci:{out}")
    if tag is not None:
        ref = type(ref)(ref.path, check_tag(tag))
    size = check_chunk_size(parse_size(chunk_size))
    started = time.monotonic()
    trees = []
    for source in sources:
        tree, contents = read_dir_layer(source)
        trees.append(Layer(tree, contents, source))
    total = total_file_bytes(trees)
    with progress_bar("building", total, quiet) as advance:
        descriptor = build_to_layout(trees, ref, chunk_size=size, progress=advance)
    if not quiet:
        click.echo(f"built {ref} ({descriptor.digest}) from {len(sources)} layer(s), "
                   f"{format_size(total)} of file data in {time.monotonic() - started:.2f}s")


@cli.command()
@click.argument("image")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(image: str, devices: tuple[str, ...], as_json: bool) -> None:
    """Show the superblock, devices and counts of an image."""
    with open_image(image, devices) as opened:
        info = _inspect(opened)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from .views import print_inspect
    print_inspect(info)


def _inspect(opened: OpenedImage) -> dict:
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
        info["bootstrap"] = {"digest": m.bootstrap.digest, "size": m.bootstrap.size}
        info["blobs"] = [{"digest": b.digest, "size": b.size, "data_size": b.data_size,
                          "chunk_table": b.table_digest} for b in m.blobs]
    return info


@cli.command(name="ls")
@click.argument("image")
@click.argument("path", default="/")
@click.option("-l", "long", is_flag=True, help="Long listing (mode, links, owner, size, time).")
@device_option
def ls_command(image: str, path: str, long: bool, devices: tuple[str, ...]) -> None:
    """List a directory (or show one entry) of an image."""
    with open_image(image, devices) as opened:
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
def cat(image: str, path: str, devices: tuple[str, ...]) -> None:
    """Write a file of an image to standard output."""
    with open_image(image, devices) as opened:
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
def extract_command(image: str, dest: str, devices: tuple[str, ...], quiet: bool) -> None:
    """Extract the whole tree of an image into DEST (new or empty)."""
    with open_image(image, devices) as opened:
        total = sum(i.size for _, i in opened.image.walk() if i.is_reg)
        with progress_bar("extracting", total, quiet) as advance:
            report = extract(opened.image, dest, progress=advance)
    for skipped in report.skipped_xattrs:
        click.echo(f"erofsd: warning: xattr not set (no permission or support): {skipped}",
                   err=True)
    if not quiet:
        click.echo(f"extracted {report.entries} entries, {format_size(report.file_bytes)}")


@cli.command()
@click.argument("image")
@device_option
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(image: str, devices: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """Walk all metadata and verify every chunk against its digest."""
    with open_image(image, devices) as opened:
        tables = opened.chunk_tables()
        total = sum(t.data_size for t in tables) if tables else 0
        with progress_bar("verifying", total, quiet or as_json) as advance:
            report = check_image(opened.image, tables, opened.blobs, advance)
    if as_json:
        click.echo(json.dumps({**vars(report), "ok": report.ok}, indent=2))
    else:
        for problem in report.problems:
            click.echo(f"erofsd: problem: {problem}", err=True)
        verified = (f", {report.chunks_verified} chunks ({format_size(report.bytes_verified)}) "
                    "verified") if tables is not None else ", all file data read"
        click.echo(f"{'ok' if report.ok else 'FAILED'}: {report.inodes} inodes "
                   f"({report.files} files, {report.directories} directories){verified}")
    if not report.ok:
        sys.exit(EXIT_ERROR)


def main() -> None:
    cli(prog_name="erofsd")


if __name__ == "__main__":
    main()

