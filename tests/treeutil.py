"""One way to describe a tree, whatever holds it: a directory, a kernel mount, our reader.

``snapshot_*`` give {path: Entry}; ``assert_same_tree`` compares two of
them and prints the first differences. ``expected_merge`` applies OCI
layers the way a runtime unpacks them, independently of the builder's code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from collections import defaultdict

from erofsd.erofs.image import Image

WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"


@dataclasses.dataclass(frozen=True)
class Entry:
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int | None = None  # not for directories (filesystem specific)
    digest: str | None = None
    target: bytes | None = None
    rdev: int | None = None
    xattrs: tuple = ()
    nlink: int | None = None  # not for directories
    links: tuple | None = None  # other names of the same inode (hard links)
    key: object = dataclasses.field(default=None, compare=False)  # inode identity


def _digest_file(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _xattrs_of_path(path: bytes, skip: tuple = ()) -> tuple:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((os.fsencode(n), os.getxattr(path, n, follow_symlinks=False))
                        for n in names if not n.startswith(skip)))


def snapshot_dir(root: str | bytes, *, keep_whiteouts: bool = False, key_prefix=None,
                 xattr_skip: tuple = ()) -> dict[bytes, Entry]:
    top = os.fsencode(root)
    snap = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        if not keep_whiteouts and os.path.basename(rel).startswith(WHITEOUT):
            continue
        full = top + rel
        st = os.lstat(full)
        snap[rel or b"/"] = _entry_from_stat(full, st, (key_prefix, st.st_ino), xattr_skip)
        if stat.S_ISDIR(st.st_mode):
            stack.extend(rel + b"/" + name for name in os.listdir(full))
    return _with_links(snap)


def _entry_from_stat(path: bytes, st: os.stat_result, key, xattr_skip) -> Entry:
    mode = st.st_mode
    common = dict(mode=mode, uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns,
                  xattrs=_xattrs_of_path(path, xattr_skip), key=key)
    if stat.S_ISDIR(mode):
        return Entry(**common)
    extra: dict = {"nlink": st.st_nlink}
    if stat.S_ISREG(mode):
        extra.update(size=st.st_size, digest=_digest_file(path))
    elif stat.S_ISLNK(mode):
        extra.update(size=st.st_size, target=os.readlink(path))
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        extra.update(rdev=st.st_rdev)
    return Entry(**common, **extra)


def snapshot_image(image: Image) -> dict[bytes, Entry]:
    snap = {}
    for path, inode in image.walk():
        st = inode.stat()
        common = dict(mode=st.mode, uid=st.uid, gid=st.gid, mtime_ns=st.mtime_ns,
                      xattrs=tuple(sorted(image.xattrs(inode))), key=inode.nid)
        if inode.is_dir:
            snap[path] = Entry(**common)
            continue
        extra: dict = {"nlink": st.nlink}
        if inode.is_reg:
            h = hashlib.sha256()
            for offset in range(0, st.size, 1 << 20):
                h.update(image.read(inode, offset, 1 << 20))
            extra.update(size=st.size, digest=h.hexdigest())
        elif inode.is_symlink:
            extra.update(size=st.size, target=image.readlink(inode))
        elif stat.S_ISCHR(st.mode) or stat.S_ISBLK(st.mode):
            extra.update(rdev=st.rdev)
        snap[path] = Entry(**common, **extra)
    return _with_links(snap)


def _with_links(snap: dict[bytes, Entry]) -> dict[bytes, Entry]:
    groups: dict = defaultdict(list)
    for path, entry in snap.items():
        if not stat.S_ISDIR(entry.mode):
            groups[entry.key].append(path)
    out = {}
    for path, entry in snap.items():
        names = groups.get(entry.key, []) if not stat.S_ISDIR(entry.mode) else []
        links = tuple(sorted(names)) if len(names) > 1 else None
        out[path] = dataclasses.replace(entry, links=links)
    return out


def expected_merge(layer_dirs: list[str]) -> dict[bytes, Entry]:
    """What a runtime sees after unpacking the layers in order, OCI whiteouts applied."""
    merged: dict[bytes, Entry] = {}

    def drop(path: bytes, *, keep_self: bool = False) -> None:
        prefix = path.rstrip(b"/") + b"/"
        for p in [p for p in merged if p.startswith(prefix) or (p == path and not keep_self)]:
            del merged[p]

    for index, layer in enumerate(layer_dirs):
        snap = snapshot_dir(layer, keep_whiteouts=True, key_prefix=index)
        for path in sorted(snap):  # whiteouts first: they hide lower layers only
            parent, name = os.path.split(path)
            if name == OPAQUE:
                drop(parent, keep_self=True)
            elif name.startswith(WHITEOUT):
                drop(os.path.join(parent, name[len(WHITEOUT):]))
        for path in sorted(snap):
            name = os.path.basename(path)
            if name.startswith(WHITEOUT):
                continue
            entry = snap[path]
            below = merged.get(path)
            if below is not None and not (stat.S_ISDIR(below.mode) and stat.S_ISDIR(entry.mode)):
                drop(path)
            merged[path] = entry
    stripped = {p: dataclasses.replace(e, links=None, nlink=None) for p, e in merged.items()}
    with_links = _with_links(stripped)
    return {p: dataclasses.replace(e, nlink=len(e.links) if e.links else 1)
            if not stat.S_ISDIR(e.mode) else e for p, e in with_links.items()}


def describe(entry: Entry | None) -> str:
    if entry is None:
        return "missing"
    fields = {k: v for k, v in dataclasses.asdict(entry).items() if v not in (None, ()) and
              k != "key"}
    fields["mode"] = oct(entry.mode)
    return repr(fields)


def assert_same_tree(actual: dict[bytes, Entry], expected: dict[bytes, Entry], *,
                     ignore=()) -> None:
    """Equal trees, or an assertion listing the first differing paths."""
    def clean(e: Entry) -> Entry:
        return dataclasses.replace(e, **{f: None if f != "xattrs" else () for f in ignore})

    problems = []
    for path in sorted(set(actual) | set(expected)):
        a, e = actual.get(path), expected.get(path)
        if a is None or e is None or clean(a) != clean(e):
            problems.append(f"{path!r}:\n   got      {describe(a)}\n   expected {describe(e)}")
    assert not problems, f"{len(problems)} paths differ:\n" + "\n".join(problems[:10])
