"""Read a directory on the local filesystem as one layer.

The walk records metadata only; file contents are read later, chunk by
chunk, by the blob writer through ``DirFileContent``, which notices a file
that changed since the walk saw it, and skips holes with SEEK_DATA instead
of reading zeros.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

from ..errors import BuildError, NameNotStorable, SourceChanged
from . import xattrs as xattr_codec
from .tree import Node, apply_whiteout, check_name

MAX_SYMLINK = 4095


def read_dir_layer(root: str | os.PathLike) -> tuple[Node, dict[Node, DirFileContent]]:
    """The layer tree of a directory, and the content of each regular file."""
    top = os.fsencode(os.fspath(root))
    contents: dict[Node, DirFileContent] = {}
    try:
        st = os.stat(top)
    except OSError as e:
        raise _error(top, e) from None
    if not stat.S_ISDIR(st.st_mode):
        raise BuildError(f"{_show(top)}: not a directory", errno=errno.ENOTDIR)
    root_node = _node(top, st)
    links: dict[tuple[int, int], Node] = {}
    stack = [(top, root_node)]
    while stack:
        path, directory = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise _error(path, e) from None
        for entry in entries:
            name = entry.name
            child_path = path + b"/" + name
            where = _show(child_path)
            if apply_whiteout(directory, name, where):
                continue
            check_name(name, where)
            try:
                cst = entry.stat(follow_symlinks=False)
            except OSError as e:
                raise _error(child_path, e) from None
            key = (cst.st_dev, cst.st_ino)
            if not stat.S_ISDIR(cst.st_mode) and cst.st_nlink > 1 and key in links:
                directory.children[name] = links[key]
                continue
            node = _node(child_path, cst)
            directory.children[name] = node
            if cst.st_nlink > 1 and not node.is_dir:
                links[key] = node
            if node.is_dir:
                stack.append((child_path, node))
            elif node.is_reg:
                contents[node] = DirFileContent(child_path, cst)
    return root_node, contents


def _node(path: bytes, st: os.stat_result) -> Node:
    mode = st.st_mode
    node = Node(mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=st.st_mtime_ns // 10**9,
                mtime_nsec=st.st_mtime_ns % 10**9, origin=_show(path))
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        node.rdev = st.st_rdev
    elif stat.S_ISREG(mode):
        node.size = st.st_size
    elif stat.S_ISLNK(mode):
        try:
            node.target = os.readlink(path)
        except OSError as e:
            raise _error(path, e) from None
        if not 0 < len(node.target) <= MAX_SYMLINK:
            raise NameNotStorable(f"{_show(path)}: symlink target of {len(node.target)} bytes")
        node.size = len(node.target)
    node.xattrs = _read_xattrs(path)
    return node


def _read_xattrs(path: bytes) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise _error(path, e) from None
    found = {}
    for name in sorted(names):
        raw = os.fsencode(name)
        if xattr_codec.split_name(raw) is None:
            raise NameNotStorable(f"{_show(path)}: xattr {name!r} cannot be stored in EROFS")
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA:  # removed since listed
                continue
            raise _error(path, e) from None
        if len(value) > xattr_codec.MAX_VALUE_SIZE:
            raise NameNotStorable(f"{_show(path)}: xattr {name!r} value of {len(value)} bytes "
                                  "is too large for EROFS")
        found[raw] = value
    return found


class DirFileContent:
    """Chunks of one regular file, checked against what the walk recorded."""

    def __init__(self, path: bytes, st: os.stat_result) -> None:
        self.path = path
        self._ino, self._size, self._mtime_ns = st.st_ino, st.st_size, st.st_mtime_ns

    def _changed(self, how: str) -> SourceChanged:
        return SourceChanged(f"{_show(self.path)}: file changed while the image was built ({how})")

    def _check(self, st: os.stat_result) -> None:
        if (st.st_ino, st.st_size, st.st_mtime_ns) != (self._ino, self._size, self._mtime_ns):
            raise self._changed("size, mtime or inode differ")

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes | None]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise _error(self.path, e) from None
        try:
            self._check(os.fstat(fd))
            for offset in range(0, self._size, chunk_size):
                length = min(chunk_size, self._size - offset)
                if _next_data(fd, offset, self._size) >= offset + length:
                    yield None
                    continue
                data = _pread_exact(fd, length, offset)
                if len(data) != length:
                    raise self._changed("it shrank")
                yield data
            if os.pread(fd, 1, self._size):
                raise self._changed("it grew")
            self._check(os.fstat(fd))
        except OSError as e:
            raise _error(self.path, e) from None
        finally:
            os.close(fd)


def _next_data(fd: int, offset: int, size: int) -> int:
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as e:
        if e.errno == errno.ENXIO:  # only a hole from here to the end
            return size
        return offset  # SEEK_DATA unsupported: read it


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _error(path: bytes, e: OSError) -> BuildError:
    return BuildError(f"{_show(path)}: {e.strerror or e}", errno=e.errno or errno.EIO)


def _show(path: bytes) -> str:
    return os.fsdecode(path)
