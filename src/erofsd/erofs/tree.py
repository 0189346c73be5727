"""The builder's tree: nodes with metadata, layers and how they merge.

A layer (a directory today, a tar stream later) is first read into a *layer
tree* that still carries its OCI whiteouts: names removed below
(``.wh.NAME``) and opaque directories (``.wh..wh..opq``). ``merge_layer``
then lays it over the tree of the layers beneath, as a container runtime
would unpack them one after the other. Hard links are one ``Node`` reached
by several names; nothing here touches file data.
"""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Iterator

from ..errors import NameNotStorable
from .ondisk import NAME_LEN

WHITEOUT_PREFIX = b".wh."
OPAQUE_WHITEOUT = b".wh..wh..opq"
# Hard links from aufs-style layers (.wh..wh.plnk etc.): metadata, not content.
AUFS_META_PREFIX = b".wh..wh."


@dataclasses.dataclass(eq=False)
class Node:
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    mtime_nsec: int = 0
    rdev: int = 0
    size: int = 0
    xattrs: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    target: bytes = b""  # symlinks
    children: dict[bytes, Node] = dataclasses.field(default_factory=dict)  # directories
    # layer bookkeeping, used only while merging
    whiteouts: set[bytes] = dataclasses.field(default_factory=set)
    opaque: bool = False
    implicit: bool = False  # a directory a tar layer implied but never described
    # regular file data, filled in by the blob writer
    device: int = 0
    chunks: list[int | None] = dataclasses.field(default_factory=list)
    origin: str = ""  # where it came from, for error messages

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    def copy_metadata_from(self, other: Node) -> None:
        for field in ("mode", "uid", "gid", "mtime", "mtime_nsec", "xattrs", "origin"):
            setattr(self, field, getattr(other, field))
        self.implicit = other.implicit


def check_name(name: bytes, where: str) -> None:
    """A name EROFS can store: 1..255 bytes, no '/', no NUL, not '.' or '..'."""
    if not name or len(name) > NAME_LEN or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise NameNotStorable(f"{where}: name {name[:80]!r} cannot be stored "
                              f"({len(name)} bytes; EROFS allows 1..{NAME_LEN}, no '/' or NUL)")


def classify_whiteout(name: bytes) -> tuple[str, bytes]:
    """('opaque'|'whiteout'|'meta'|'entry', target name)."""
    if name == OPAQUE_WHITEOUT:
        return "opaque", b""
    if name.startswith(AUFS_META_PREFIX):
        return "meta", b""
    if name.startswith(WHITEOUT_PREFIX):
        return "whiteout", name[len(WHITEOUT_PREFIX):]
    return "entry", name


def apply_whiteout(directory: Node, name: bytes, where: str) -> bool:
    """Record ``name`` on ``directory`` if it is a whiteout marker; True when it was one.

    ``.wh..wh..opq`` makes the directory opaque, ``.wh.NAME`` hides NAME of the
    layers beneath, ``.wh..wh.*`` (AUFS metadata) is dropped; none is an entry.
    """
    kind, target = classify_whiteout(name)
    if kind == "opaque":
        directory.opaque = True
    elif kind == "whiteout":
        check_name(target, where)
        directory.whiteouts.add(target)
    return kind != "entry"


def merge_layer(lower: Node | None, upper: Node) -> Node:
    """Lay the directory ``upper`` (a layer tree) over ``lower``; returns the merged directory.

    The upper node becomes the merged one: its metadata wins unless it was
    only implied, and its children are the lower ones, minus whiteouts (all
    of them if opaque), with its own laid on top.
    """
    if lower is None or not lower.is_dir:
        merged: dict[bytes, Node] = {}
    else:
        merged = {} if upper.opaque else dict(lower.children)
        if upper.implicit:
            upper.copy_metadata_from(lower)
    for name in upper.whiteouts:
        merged.pop(name, None)
    for name, child in upper.children.items():
        below = merged.get(name)
        merged[name] = merge_layer(below, child) if child.is_dir else child
    upper.children = merged
    upper.whiteouts = set()
    upper.opaque = False
    return upper


def iter_tree(root: Node) -> Iterator[tuple[bytes, Node]]:
    """(path, node) depth first, children in name order: the order blobs are written in."""
    yield b"/", root
    stack = [(b"", root)]
    while stack:
        prefix, directory = stack.pop()
        subdirs = []
        for name in sorted(directory.children):
            node = directory.children[name]
            path = prefix + b"/" + name
            yield path, node
            if node.is_dir:
                subdirs.append((path, node))
        stack.extend(reversed(subdirs))
