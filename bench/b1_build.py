"""B1 build: `erofsd build` against `mkfs.erofs --chunksize=1048576 --blobdev`.

Both read the same tree from a warm page cache and write one bootstrap
plus one blob; throughput is file bytes per second of wall time. erofsd
writes compressed blobs (its default) and, third in the alternation,
uncompressed ones (`--compression none`, what it wrote before). Like with
like: erofsd's uncompressed build against that mkfs.erofs, and erofsd's
compressed build against mkfs.erofs compressing too (`-zlz4hc`, the best
compressor erofs-utils 1.5 has here; it writes one image, no chunks), on
the stdlib only: over the large files' random bytes it runs at 4 MiB/s.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .common import (
    MIB,
    Figure,
    Sample,
    alternate,
    erofsd_command,
    large_files_tree,
    median,
    run_timed,
    stdlib_tree,
    tree_bytes,
)


def _erofsd(tree: Path, work: Path, *options: str) -> Sample:
    out = work / "erofsd"
    shutil.rmtree(out, ignore_errors=True)
    return run_timed(erofsd_command("build", str(tree), str(out), "--quiet", *options))


def _mkfs(tree: Path, work: Path) -> Sample:
    for name in ("boot.img", "blob.img"):
        (work / name).unlink(missing_ok=True)
    return run_timed(["mkfs.erofs", "--quiet", "--chunksize=1048576",
                      f"--blobdev={work / 'blob.img'}", str(work / "boot.img"), str(tree)])


def _mkfs_lz4hc(tree: Path, work: Path) -> Sample:
    (work / "lz4hc.img").unlink(missing_ok=True)
    return run_timed(["mkfs.erofs", "--quiet", "-zlz4hc", str(work / "lz4hc.img"), str(tree)])


def run(quick: bool) -> list[Figure]:
    runs = 3 if quick else 5
    sets = [("stdlib", stdlib_tree(quick)),
            ("large files", large_files_tree(4, (32 if quick else 256) * MIB))]
    figures = []
    for name, tree in sets:
        files, size = tree_bytes(tree)
        with tempfile.TemporaryDirectory(prefix="erofsd-bench-") as tmp:
            work = Path(tmp)
            _erofsd(tree, work), _mkfs(tree, work)  # warm the page cache for both
            contenders = [lambda t=tree, w=work: _erofsd(t, w),
                          lambda t=tree, w=work: _mkfs(t, w),
                          lambda t=tree, w=work: _erofsd(t, w, "--compression", "none")]
            if name == "stdlib":  # lz4hc takes minutes over incompressible large files
                contenders.append(lambda t=tree, w=work: _mkfs_lz4hc(t, w))
            ours, peer, plain, *lz4hc = alternate(runs, *contenders)
        params = {"data": name, "files": files, "bytes": size, "runs": runs}
        mib = size / MIB
        figures.append(Figure("B1", f"build throughput, {name}", "MiB/s",
                              mib / median(ours), "mkfs.erofs", mib / median(peer), params,
                              goal=">= 1.0"))
        figures.append(Figure("B1", f"build throughput, {name}, both uncompressed", "MiB/s",
                              mib / median(plain), "mkfs.erofs", mib / median(peer), params,
                              goal=">= 1.0"))
        if lz4hc:
            figures.append(Figure("B1", f"build throughput, {name}, both compressed", "MiB/s",
                                  mib / median(ours), "mkfs.erofs -zlz4hc",
                                  mib / median(lz4hc[0]), params, goal=">= 1.0"))
        figures.append(Figure("B1", f"build CPU time, {name}", "s", median(ours, "cpu"),
                              "mkfs.erofs", median(peer, "cpu"), params,
                              higher_is_better=False))
        figures.append(Figure("B1", f"build throughput, {name}, zstd blobs", "MiB/s",
                              mib / median(ours), "erofsd, uncompressed blobs",
                              mib / median(plain), params))
    return figures
