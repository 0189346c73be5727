"""A layer tree as JSON, so a converted layer need not be read again.

Entries come parents first. A hard link within the layer names the path of
its first entry ("h"); a hard link to a lower layer's file names that path
in the merged tree below ("H"), and is resolved against it when decoded.
Names and link targets are bytes, kept through surrogate escapes.
"""

from __future__ import annotations

import base64
import os
import stat
from typing import Any

from ..errors import CorruptImage
from .tree import Node, iter_tree


def _text(raw: bytes) -> str:
    return os.fsdecode(raw)


def encode(root: Node, own: set[Node], lower_path_of: dict[Node, bytes]) -> list[dict[str, Any]]:
    """``own``: nodes the layer created; ``lower_path_of``: paths of the lower nodes it links."""
    first_path: dict[Node, bytes] = {}
    entries = []
    for path, node in iter_tree(root):
        entry: dict[str, Any] = {"p": _text(path)}
        if node not in own:
            entry["H"] = _text(lower_path_of[node])
        elif node in first_path:
            entry["h"] = _text(first_path[node])
        else:
            first_path[node] = path
            entry.update(m=node.mode, u=node.uid, g=node.gid, t=node.mtime, n=node.mtime_nsec)
            if node.rdev:
                entry["r"] = node.rdev
            if node.is_reg:
                entry.update(s=node.size, c=node.chunks)
            if stat.S_ISLNK(node.mode):
                entry["l"] = _text(node.target)
            if node.xattrs:
                entry["x"] = {_text(k): base64.b64encode(v).decode()
                              for k, v in node.xattrs.items()}
            if node.is_dir:
                if node.whiteouts:
                    entry["w"] = sorted(_text(w) for w in node.whiteouts)
                if node.opaque:
                    entry["o"] = True
                if node.implicit:
                    entry["i"] = True
        entries.append(entry)
    return entries


def decode(entries: list[dict[str, Any]], device: int, lower: Node | None, name: str) -> Node:
    by_path: dict[bytes, Node] = {}
    root: Node | None = None
    for entry in entries:
        path = os.fsencode(entry["p"])
        if "H" in entry:
            node = _lookup(lower, os.fsencode(entry["H"]))
            if node is None:
                raise CorruptImage(f"cached layer {name}: its hard link target "
                                   f"{entry['H']!r} is not in the layers below")
        elif "h" in entry:
            node = by_path[os.fsencode(entry["h"])]
        else:
            node = Node(mode=entry["m"], uid=entry["u"], gid=entry["g"], mtime=entry["t"],
                        mtime_nsec=entry["n"], rdev=entry.get("r", 0), size=entry.get("s", 0),
                        target=os.fsencode(entry.get("l", "")),
                        xattrs={os.fsencode(k): base64.b64decode(v)
                                for k, v in entry.get("x", {}).items()},
                        whiteouts={os.fsencode(w) for w in entry.get("w", [])},
                        opaque=entry.get("o", False), implicit=entry.get("i", False),
                        chunks=entry.get("c", []), origin=f"{name}:{entry['p']}")
            if node.is_reg:
                node.device = device
        by_path[path] = node
        if path == b"/":
            root = node
        else:
            parent, _, child = path.rpartition(b"/")
            by_path[parent or b"/"].children[child] = node
    if root is None:
        raise CorruptImage(f"cached layer {name} has no root")
    return root


def _lookup(root: Node | None, path: bytes) -> Node | None:
    node = root
    for part in path.strip(b"/").split(b"/"):
        if node is None or not node.is_dir:
            return None
        node = node.children.get(part)
    return node
