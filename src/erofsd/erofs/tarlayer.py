"""Read a tar stream (an OCI layer) into a layer tree, writing its blob as it goes.

A tar layer is untrusted data and nothing in it is acted on: entries become
nodes of an in-memory tree; only file contents are copied (into the blob),
in tar order, so the blob is a pure function of the layer's bytes.

Refused, with the layer and the entry named: absolute paths, ``..``
components, paths that climb through a symlink (set up earlier in the layer,
or by a lower layer), hard links to nothing, device nodes in a rootless
tree, entry types EROFS cannot hold, truncated streams, and a tar without
its end-of-archive marker.

Kept as data: setuid bits, device numbers, owners, modes, mtimes with
nanoseconds (PAX), xattrs (PAX ``SCHILY.xattr.*`` and ``LIBARCHIVE.xattr.*``),
long names and link targets (GNU and PAX), sparse files (GNU 0.0, 0.1,
1.0 and old GNU), and hard links, also to files of a lower layer. Repeated
entries: the last wins. Directories implied by their children are created.
"""

from __future__ import annotations

import base64
import os
import stat
import tarfile
import urllib.parse
import zlib
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from ..errors import BuildError, NameNotStorable
from . import xattrs as xattr_codec
from .tree import Node, apply_whiteout, check_name

MAX_SYMLINK = 4095
_TYPES = {
    tarfile.REGTYPE: stat.S_IFREG, tarfile.AREGTYPE: stat.S_IFREG, tarfile.CONTTYPE: stat.S_IFREG,
    tarfile.GNUTYPE_SPARSE: stat.S_IFREG, tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.SYMTYPE: stat.S_IFLNK, tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}


class TarContent:
    """A plain member's bytes: read from the tar stream, or found at ``offset`` in it."""

    def __init__(self, fileobj: BinaryIO, size: int, offset: int) -> None:
        self._fileobj, self._size = fileobj, size
        self.offset = offset  # of the first byte in the uncompressed tar

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes | None]:
        left = self._size
        while left > 0:
            data = self._fileobj.read(min(chunk_size, left))
            if not data:
                raise tarfile.ReadError("unexpected end of data")
            left -= len(data)
            yield data


class _SparseContent:
    """A sparse member: its data regions, stored one after another in the archive.

    Holes are never read nor materialised: a chunk with no data in it is
    None (a hole in the blob), so the cost follows the data and the chunk
    count, not the file's declared size.
    """

    def __init__(self, stream, data_offset: int, regions: list[tuple[int, int]],
                 size: int) -> None:
        self._stream, self._data_offset = stream, data_offset
        self._regions, self._size = regions, size

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes | None]:
        self._stream.seek(self._data_offset)  # a tar stream seeks forward only: enough here
        regions = iter(self._regions)
        region = next(regions, None)
        for start in range(0, self._size, chunk_size):
            end = min(start + chunk_size, self._size)
            if region is None or region[0] >= end:
                yield None
                continue
            chunk = bytearray(end - start)
            while region is not None and region[0] < end:
                offset, length = region
                take = min(offset + length, end) - offset
                data = self._stream.read(take)
                if len(data) != take:
                    raise tarfile.ReadError("unexpected end of data")
                chunk[offset - start:offset - start + take] = data
                region = (offset + take, length - take) if take < length \
                    else next(regions, None)
            yield bytes(chunk)


def data_regions(sparse: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The regions of a sparse map that hold data, checked: in order, apart, in the file.

    Empty regions carry no data (GNU tar pads its map with them, and ends a
    file that ends in a hole with one); they are dropped.
    """
    regions, end = [], 0
    for offset, length in sparse:
        if length == 0 and 0 <= offset <= size:
            continue
        if offset < end or length < 0 or offset + length > size:
            raise ValueError(f"corrupt sparse map: region {offset}+{length} in a file of "
                             f"{size} bytes")
        regions.append((offset, length))
        end = offset + length
    return regions


class ContentSink(Protocol):
    """Where a regular file's content goes: a BlobWriter copies it into a blob; a tar
    index points at it where it lies (tarindex.py). Either sets ``node.chunks``."""

    def add(self, node: Node, content: TarContent | _SparseContent) -> None: ...


class TarLayerReader:
    """One layer. ``lower`` is the merged tree of the layers beneath (read only)."""

    def __init__(self, name: str, device: int, writer: ContentSink, lower: Node | None, *,
                 rootless: bool = False) -> None:
        self.name = name
        self.device = device
        self.writer = writer
        self.lower = lower
        self.rootless = rootless
        self.root = Node(mode=stat.S_IFDIR | 0o755, implicit=True, origin=f"{name}:/")
        self.own: set[Node] = {self.root}  # nodes this layer created (not linked from below)
        self.lower_links: dict[Node, bytes] = {}  # lower nodes hard-linked here, by path
        self.entry = ""

    def fail(self, message: str, cls: type = BuildError) -> BuildError:
        return cls(f"{self._where()}: {message}")

    def _where(self) -> str:
        return f"layer {self.name}, entry {self.entry!r}"

    def read(self, stream: BinaryIO) -> Node:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|", errors="surrogateescape")
            for member in tar:
                self.entry = member.name
                self._add(tar, member)
            end_offset = tar.offset
        except BuildError:
            raise
        except (tarfile.TarError, EOFError, zlib.error, ValueError) as e:
            raise self.fail(f"truncated or corrupt tar stream ({e})") from None
        self.entry = "(end of archive)"
        self._check_end(stream, end_offset)
        return self.root

    def _check_end(self, stream: BinaryIO, end_offset: int) -> None:
        """A tar ends with zero blocks; a stream cut at an entry boundary lacks them."""
        tail = getattr(stream, "tail_after", None)
        if tail is None:
            return
        trailer = tail(end_offset)
        if len(trailer) < tarfile.BLOCKSIZE or trailer.count(0) != len(trailer):
            raise self.fail("the tar stream is truncated: no end-of-archive blocks")

    # -- paths ----------------------------------------------------------------------

    def _parts(self, name: str) -> list[bytes]:
        raw = os.fsencode(name)
        if raw.startswith(b"/"):
            raise self.fail("absolute path")
        parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
        if b".." in parts:
            raise self.fail("path has a '..' component")
        where = self._where()
        for part in parts:
            check_name(part, where)
        return parts

    def _lower_at(self, parts: list[bytes]) -> Node | None:
        node = self.lower
        for part in parts:
            if node is None or not node.is_dir:
                return None
            node = node.children.get(part)
        return node

    def _parent(self, parts: list[bytes]) -> Node:
        """The directory holding ``parts[-1]``, creating implied directories."""
        directory = self.root
        for depth, part in enumerate(parts[:-1]):
            child = directory.children.get(part)
            if child is not None and child.is_dir:
                directory = child
                continue
            where = b"/".join(parts[:depth + 1]).decode(errors="replace")
            if child is None:
                below = self._lower_at(parts[:depth + 1])
                if below is not None and stat.S_ISLNK(below.mode):
                    raise self.fail(f"path climbs through {where}, a symlink of a lower layer")
                child = Node(mode=stat.S_IFDIR | 0o755, implicit=True,
                             origin=f"{self.name}:/{where}")
                self.own.add(child)
                directory.children[part] = child
            elif stat.S_ISLNK(child.mode):
                raise self.fail(f"path climbs through {where}, a symlink set up by an "
                                "earlier entry")
            else:
                raise self.fail(f"path goes through {where}, which is not a directory")
            directory = child
        return directory

    # -- entries ----------------------------------------------------------------------

    def _add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self._parts(member.name)
        if not parts:  # "./": the layer's root directory itself
            if member.isdir():
                self._set_metadata(self.root, member)
            return
        parent = self._parent(parts)
        if apply_whiteout(parent, parts[-1], self._where()):
            return
        name = parts[-1]
        if member.islnk():
            parent.children[name] = self._link_target(member.linkname)
            return
        file_type = _TYPES.get(member.type)
        if file_type is None:
            raise self.fail(f"tar entry type {member.type!r} cannot be stored")
        existing = parent.children.get(name)
        if file_type == stat.S_IFDIR and existing is not None and existing.is_dir \
                and existing in self.own:
            self._set_metadata(existing, member)  # a repeated directory keeps its children
            existing.implicit = False
            return
        node = Node(mode=file_type, origin=self._where())
        self._set_metadata(node, member)
        if file_type == stat.S_IFREG:
            node.size = member.size
            node.device = self.device
            if member.size:
                self.writer.add(node, self._content(tar, member))
        elif file_type == stat.S_IFLNK:
            node.mode = stat.S_IFLNK | 0o777  # Linux shows every symlink as 0777
            node.target = os.fsencode(member.linkname)
            if not 0 < len(node.target) <= MAX_SYMLINK:
                raise self.fail(f"symlink target of {len(node.target)} bytes",
                                NameNotStorable)
            node.size = len(node.target)
        elif file_type in (stat.S_IFCHR, stat.S_IFBLK):
            if self.rootless:
                raise self.fail("a device node cannot be part of a rootless tree")
            node.rdev = os.makedev(member.devmajor, member.devminor)
        self.own.add(node)
        parent.children[name] = node

    def _content(self, tar: tarfile.TarFile, member: tarfile.TarInfo):
        if member.sparse is None:
            return TarContent(tar.extractfile(member), member.size, member.offset_data)
        try:
            regions = data_regions(member.sparse, member.size)
        except ValueError as e:
            raise self.fail(str(e)) from None
        return _SparseContent(tar.fileobj, member.offset_data, regions, member.size)

    def _link_target(self, linkname: str) -> Node:
        parts = self._parts(linkname)
        node: Node | None = self.root
        for part in parts:
            node = node.children.get(part) if node is not None and node.is_dir else None
        if node is None:
            node = self._lower_at(parts)
            if node is not None:
                self.lower_links.setdefault(node, b"/" + b"/".join(parts))
        if node is None or not parts:
            raise self.fail(f"hard link to {linkname!r}, which does not exist")
        if node.is_dir:
            raise self.fail(f"hard link to {linkname!r}, a directory")
        return node

    def _set_metadata(self, node: Node, member: tarfile.TarInfo) -> None:
        node.mode = stat.S_IFMT(node.mode) | (member.mode & 0o7777)
        node.uid, node.gid = member.uid, member.gid
        node.mtime, node.mtime_nsec = _mtime(member)
        node.xattrs = self._xattrs(member)

    def _xattrs(self, member: tarfile.TarInfo) -> dict[bytes, bytes]:
        found = {}
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                name = os.fsencode(key[len("SCHILY.xattr."):])
                raw = value.encode("utf-8", "surrogateescape")
            elif key.startswith("LIBARCHIVE.xattr."):
                name = urllib.parse.unquote_to_bytes(key[len("LIBARCHIVE.xattr."):])
                try:
                    raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
                except ValueError:
                    raise self.fail(f"xattr {name!r}: value is not base64") from None
            else:
                continue
            if xattr_codec.split_name(name) is None:
                raise self.fail(f"xattr {name.decode(errors='replace')!r} cannot be stored "
                                "in EROFS", NameNotStorable)
            if len(raw) > xattr_codec.MAX_VALUE_SIZE:
                raise self.fail(f"xattr {name!r} value of {len(raw)} bytes is too large",
                                NameNotStorable)
            found[name] = raw
        return found


def _mtime(member: tarfile.TarInfo) -> tuple[int, int]:
    """Seconds and nanoseconds; a PAX mtime keeps all its digits (a float would not)."""
    text = member.pax_headers.get("mtime")
    if text:
        whole, _, fraction = text.partition(".")
        try:
            seconds = int(whole)
            nanos = int((fraction + "000000000")[:9]) if fraction else 0
            if seconds < 0 and nanos:  # -1.5 is -2 s + 500000000 ns
                seconds, nanos = seconds - 1, 1_000_000_000 - nanos
            return seconds, nanos
        except ValueError:
            pass
    return int(member.mtime), 0
