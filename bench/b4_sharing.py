"""B4 domain sharing: N images on one base, all read fully, in one domain or each alone.

Set 3: a base layer of real files (the stdlib tree) and N application
layers of random files, built as N images and pushed to a registry on
127.0.0.1. The ideal is the unique bytes (the base once, each app once):
as stored in the registry for bytes fetched, as the cache keeps them
(uncompressed) for bytes on disk.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
from pathlib import Path

from erofsd.cache.store import BlobCache

from .common import DATA_DIR, MIB, Figure, stdlib_tree, tests_on_path
from .registry_setup import pushed_images


def app_tree(index: int, size: int) -> Path:
    root = DATA_DIR / f"app-{index}-{size // MIB}M"
    if not root.exists():
        tmp = root.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        rng = random.Random(index)
        for i in range(20):
            (tmp / f"app{index}-{i}").write_bytes(rng.randbytes(size // 20))
        tmp.rename(root)
    return root


def _read_all(mountpoint: str) -> None:
    subprocess.run(["sh", "-c", f"tar cf - -C '{mountpoint}' . | cat > /dev/null"], check=True)


def _measure(refs: list[str], root: Path, domain: str | None) -> tuple[int, int]:
    from daemonutil import DaemonProc
    with DaemonProc(root) as daemon:
        for i, ref in enumerate(refs):
            daemon.client.mount(ref, daemon.mountpoint(f"m{i}"), insecure=True, fsid=f"img{i}",
                                domain_id=domain)
        for i in range(len(refs)):
            _read_all(daemon.mountpoint(f"m{i}"))
        fetched = sum(c["fetched_bytes"] for c in daemon.client.status()["cookies"])
        disk = sum(b.disk_bytes for v in BlobCache(daemon.state).list() for b in v.blobs)
        return fetched, disk


def run(quick: bool) -> list[Figure]:
    tests_on_path()
    counts = (2, 4) if quick else (2, 4, 8)
    base = stdlib_tree(quick)
    apps = [app_tree(i, (4 if quick else 20) * MIB) for i in range(max(counts))]
    figures = []
    images = {f"img{i}": [base, app] for i, app in enumerate(apps)}
    with pushed_images(images) as (refs, sizes), \
            tempfile.TemporaryDirectory(prefix="erofsd-bench-b4-") as tmp:
        root = Path(tmp)
        for n in counts:
            chosen = [refs[f"img{i}"] for i in range(n)]
            unique = [sizes["base"]] + [sizes[f"img{i}"] for i in range(n)]
            ideal = sum(b.stored for b in unique)  # fetched: the blobs as they travel
            ideal_disk = sum(b.cached for b in unique)  # kept: their data, uncompressed
            shared_fetched, shared_disk = _measure(chosen, root / f"d{n}", "b4")
            alone_fetched, alone_disk = _measure(chosen, root / f"p{n}", None)
            params = {"images": n, "ideal_bytes": ideal, "ideal_disk_bytes": ideal_disk}
            figures.append(Figure("B4", f"bytes fetched / ideal, {n} images", "x",
                                  shared_fetched / ideal, "each image in its own volume",
                                  alone_fetched / ideal, params, higher_is_better=False,
                                  goal="one domain: 1.00"))
            figures.append(Figure("B4", f"bytes on disk / ideal, {n} images", "x",
                                  shared_disk / ideal_disk, "each image in its own volume",
                                  alone_disk / ideal_disk, params, higher_is_better=False,
                                  goal="one domain: 1.00"))
    return figures
