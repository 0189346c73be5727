"""Test trees, generated reproducibly: edge cases, random trees and layer families."""

from __future__ import annotations

import os
import random
import socket
import stat
from pathlib import Path

MIB = 1 << 20


def _set_times(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def _finish_dirs(root: Path, dir_times: dict[Path, int]) -> None:
    """Directory mtimes last, deepest first (adding entries changes them)."""
    for path in sorted(dir_times, key=lambda p: -len(p.parts)):
        _set_times(path, dir_times[path])


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _exact_block_dir(path: Path, block: int = 4096) -> None:
    """A directory whose dirents fill exactly one block (no inline tail)."""
    path.mkdir()
    remaining = block - (12 + 1) - (12 + 2)  # "." and ".."
    i = 0
    while remaining > 12 + 255:
        name = f"e{i:03d}".ljust(50, "x")
        (path / name).touch()
        remaining -= 12 + len(name)
        i += 1
    (path / ("z" * (remaining - 12))).touch()


def edge_tree(root: Path, *, big_dir: int = 0, seed: int = 1) -> Path:
    """Every kind of entry and the boundary sizes a format gets wrong."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    dir_times: dict[Path, int] = {}
    _write(root / "empty", b"")
    _write(root / "small", b"hello\n")
    for name, size in (("block_minus", 4095), ("block_exact", 4096), ("block_plus", 4097),
                       ("chunk_plus", MIB + 1), ("three_chunks", 3 * MIB - 7)):
        _write(root / name, rng.randbytes(size))
    _write(root / "zeros", bytes(3 * MIB))
    with open(root / "sparse", "wb") as f:
        f.write(rng.randbytes(4096))
        f.seek(5 * MIB)
        f.write(rng.randbytes(10000))
        f.truncate(9 * MIB)
    same = rng.randbytes(2 * MIB + 100)
    _write(root / "dup1", same)
    _write(root / "dup2", same)
    (root / "sub").mkdir()
    _write(root / "hard1", rng.randbytes(5000))
    os.link(root / "hard1", root / "sub" / "hard2")
    os.link(root / "hard1", root / "hard3")
    os.symlink("small", root / "link")
    os.symlink("/etc/passwd", root / "abs_link")
    os.symlink("t" * 3000, root / "long_link")
    devs = root / "devs"
    devs.mkdir()
    os.mknod(devs / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(devs / "disk", stat.S_IFBLK | 0o660, os.makedev(8, 1))
    os.mknod(devs / "bigminor", stat.S_IFCHR | 0o600, os.makedev(259, 300000))
    os.mkfifo(devs / "fifo", 0o640)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(devs / "socket"))
    modes = root / "modes"
    modes.mkdir()
    _write(modes / "suid", b"#!/bin/sh\n", 0o4755)
    _write(modes / "sgid", b"#!/bin/sh\n", 0o2755)
    _write(modes / "none", b"secret", 0o000)
    (modes / "sticky").mkdir()
    (modes / "sticky").chmod(0o1777)
    (modes / "readonly").mkdir()
    _write(modes / "readonly" / "inside", b"x")
    owners = root / "owners"
    owners.mkdir()
    _write(owners / "big_ids", b"ids")
    os.chown(owners / "big_ids", 100000, 200000)
    _write(owners / "small_ids", b"ids")
    os.chown(owners / "small_ids", 1000, 1001)
    os.symlink("big_ids", owners / "link_owned")
    os.chown(owners / "link_owned", 4242, 4343, follow_symlinks=False)
    times = root / "times"
    times.mkdir()
    for name, ns in (("epoch_plus", 10**9), ("negative", -100 * 10**9 - 5),
                     ("future", 2**34 * 10**9 + 999_999_999), ("nanos", 1_600_000_000_123_456_789)):
        _write(times / name, name.encode())
        _set_times(times / name, ns)
    xattrs = root / "xattrs"
    xattrs.mkdir()
    for i in range(5):
        f = _write(xattrs / f"shared{i}", b"s")
        os.setxattr(f, "user.shared", b"one value on many inodes")
        os.setxattr(f, "security.erofsd", b"label")
    f = _write(xattrs / "many", b"m")
    os.setxattr(f, "user.a", b"1")
    os.setxattr(f, "user.empty", b"")
    os.setxattr(f, "trusted.t", b"trusted value")
    os.setxattr(f, "user.big", rng.randbytes(3000))
    os.setxattr(xattrs, "user.on_dir", b"d")
    os.setxattr(root / "long_link", "trusted.on_link", b"l", follow_symlinks=False)
    names = root / "names"
    names.mkdir()
    for name in (b"n" * 255, b"\xff\xfe not utf8", b"with space", b"new\nline", "üñí".encode(),
                 b"-dash", b".hidden", b"..dots", b"a" * 200 + b"\x01"):
        _write(Path(os.fsdecode(bytes(names) + b"/" + name)), name)
    deep = root
    for i in range(40):
        deep = deep / f"d{i}"
        deep.mkdir()
    _write(deep / "bottom", b"deep")
    _exact_block_dir(root / "exact_block_dir")
    if big_dir:
        big = root / "big_dir"
        big.mkdir()
        for i in range(big_dir):
            (big / f"entry-{i:05d}-{'y' * (i % 40)}").touch()
    (modes / "readonly").chmod(0o555)
    for path in [root, *root.rglob("*")]:
        if stat.S_ISDIR(path.lstat().st_mode):
            dir_times[path] = 1_500_000_000 * 10**9 + rng.randrange(10**9)
    _finish_dirs(root, dir_times)
    return root


def random_tree(root: Path, seed: int, entries: int = 200, max_size: int = 300_000) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    dirs = [root]
    files: list[Path] = []
    blobs = [rng.randbytes(rng.randrange(1, 70_000)) for _ in range(5)]
    for i in range(entries):
        parent = rng.choice(dirs)
        name = f"{i}-" + "".join(rng.choice("abcdefghij_.-") for _ in range(rng.randrange(1, 30)))
        path = parent / name
        roll = rng.random()
        if roll < 0.15:
            path.mkdir()
            dirs.append(path)
        elif roll < 0.22:
            os.symlink(rng.choice(["../x", "target", "/abs/path", name * 3]), path)
        elif roll < 0.28 and files:
            os.link(rng.choice(files), path)
        else:
            kind = rng.random()
            if kind < 0.3:
                data = rng.choice(blobs)
            elif kind < 0.4:
                data = bytes(rng.randrange(0, 2 * MIB))
            else:
                data = rng.randbytes(rng.choice([0, 1, 4095, 4096, 4097,
                                                 rng.randrange(max_size)]))
            _write(path, data, rng.choice([0o644, 0o600, 0o755, 0o4711]))
            if rng.random() < 0.2:
                os.setxattr(path, f"user.k{rng.randrange(3)}", rng.randbytes(rng.randrange(40)))
            files.append(path)
        if not path.is_dir():
            _set_times(path, rng.randrange(0, 2**33) * 10**9 + rng.randrange(10**9))
    _finish_dirs(root, {d: rng.randrange(0, 2**32) * 10**9 for d in dirs})
    return root


def layer_family(base: Path) -> list[Path]:
    """Three layers exercising replacement, whiteouts, opaque dirs and type changes."""
    rng = random.Random(7)
    l1, l2, l3 = base / "l1", base / "l2", base / "l3"
    for layer in (l1, l2, l3):
        layer.mkdir(parents=True)
    # layer 1: the base
    for d in ("etc", "data", "gonedir", "opq", "swap_d2f", "keep"):
        (l1 / d).mkdir()
    _write(l1 / "etc" / "conf", b"v1\n")
    for name in "abc":
        _write(l1 / "data" / name, rng.randbytes(10_000))
    _write(l1 / "gone", b"bye")
    _write(l1 / "gonedir" / "inner", b"inner")
    _write(l1 / "opq" / "x", b"x")
    _write(l1 / "opq" / "y", b"y")
    _write(l1 / "swap_f2d", b"file first")
    _write(l1 / "swap_d2f" / "child", b"child")
    _write(l1 / "keep" / "big", rng.randbytes(2 * MIB + 3))
    _write(l1 / "hl1", b"linked")
    os.link(l1 / "hl1", l1 / "hl2")
    _write(l1 / "same_in_two_layers", b"identical bytes")
    # layer 2: changes
    (l2 / "etc").mkdir()
    _write(l2 / "etc" / "conf", b"v2\n", 0o600)
    (l2 / "etc").chmod(0o750)
    _write(l2 / ".wh.gone", b"")
    _write(l2 / ".wh.gonedir", b"")
    (l2 / "opq").mkdir()
    _write(l2 / "opq" / ".wh..wh..opq", b"")
    _write(l2 / "opq" / "z", b"z")
    (l2 / "swap_f2d").mkdir()
    _write(l2 / "swap_f2d" / "now_a_dir", b"d")
    _write(l2 / "swap_d2f", b"now a file")
    (l2 / "data").mkdir()
    _write(l2 / "data" / "d", b"new in l2")
    _write(l2 / "data" / ".wh.a", b"")
    _write(l2 / "hl1", b"replaced: hl2 keeps the old inode")
    _write(l2 / "l2h1", b"l2 link")
    os.link(l2 / "l2h1", l2 / "l2h2")
    _write(l2 / "same_in_two_layers", b"identical bytes")
    l2.chmod(0o711)
    # layer 3: more
    (l3 / "data").mkdir()
    _write(l3 / "data" / ".wh..wh..opq", b"")
    _write(l3 / "data" / "only", b"only this survives in data")
    (l3 / "new" / "deep").mkdir(parents=True)
    _write(l3 / "new" / "deep" / "file", b"f")
    _write(l3 / ".wh.swap_f2d", b"")
    _write(l3 / ".wh.never_existed", b"")
    _write(l3 / ".wh..wh.plnk", b"aufs metadata")
    return [l1, l2, l3]
