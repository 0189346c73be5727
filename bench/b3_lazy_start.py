"""B3 cold lazy start: a recorded workload against the stdlib image in a registry.

The workload reads the files that `python3 -c "import json, email,
http.client, sqlite3"` opens (recorded once on the host with an audit
hook). erofsd: a fresh daemon mounts the image lazily (fanotify) and the
workload runs. Peer: a full pull (every blob downloaded with the same
HTTP client), a kernel mount of the pulled image, the same workload.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from erofsd.images import ReadOptions, open_image
from erofsd.kernel.mount import mount_erofs, umount

from .common import Figure, Sample, alternate, drop_caches, median, stdlib_tree, tests_on_path
from .registry_setup import pushed_image

RECORD = ("import sys\nopened = []\n"
          "sys.addaudithook(lambda e, a: opened.append(a[0]) if e == 'open' and "
          "isinstance(a[0], str) else None)\n"
          "import json, email, http.client, sqlite3\n"
          "print('\\n'.join(opened))")


def workload_files(quick: bool) -> list[str]:
    """Paths, relative to the stdlib, that the imports open."""
    stdlib = sysconfig.get_paths()["stdlib"]
    out = subprocess.run([sys.executable, "-I", "-c", RECORD], check=True, capture_output=True,
                         text=True).stdout.split()
    found = sorted({os.path.relpath(p, stdlib) for p in out
                    if p.startswith(stdlib + "/") and os.path.isfile(p)
                    and "site-packages" not in p})
    return [p for p in found if (stdlib_tree(quick) / p).is_file()]


def run_workload(root: str, files: list[str]) -> int:
    total = 0
    for rel in files:
        with open(os.path.join(root, rel), "rb") as f:
            total += len(f.read())
    return total


def run(quick: bool) -> list[Figure]:
    tests_on_path()
    from daemonutil import DaemonProc

    runs = 3 if quick else 5
    files = workload_files(quick)
    read_bytes = sum((stdlib_tree(quick) / p).stat().st_size for p in files)
    fetched: list[int] = []
    with pushed_image("stdlib-b3", [stdlib_tree(quick)]) as (ref, image_bytes), \
            tempfile.TemporaryDirectory(prefix="erofsd-bench-b3-") as tmp:
        root = Path(tmp)

        def lazy() -> Sample:
            shutil.rmtree(root / "lazy", ignore_errors=True)
            with DaemonProc(root / "lazy") as daemon:
                drop_caches()
                started = time.perf_counter()
                mnt = daemon.mountpoint("m")
                daemon.client.mount(ref, mnt, insecure=True)
                run_workload(mnt, files)
                wall = time.perf_counter() - started
                fetched.append(sum(c["fetched_bytes"] for c in daemon.client.status()["cookies"]))
                return Sample(wall, 0)

        def full_pull() -> Sample:
            shutil.rmtree(root / "pull", ignore_errors=True)
            drop_caches()
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "erofsd", "pull", ref, f"oci:{root / 'pull'}:x",
                            "--insecure", "--quiet"], check=True)
            with open_image(f"oci:{root / 'pull'}:x") as opened:
                blobs = [b.path for b in opened.blobs]
                bootstrap = root / "pull" / "blobs" / "sha256" / \
                    opened.manifest.bootstrap.digest[7:]
            mnt = root / "pull-mnt"
            mnt.mkdir(exist_ok=True)
            mount_erofs(str(bootstrap), str(mnt), blobs)
            try:
                run_workload(str(mnt), files)
            finally:
                umount(str(mnt))
            return Sample(time.perf_counter() - started, 0)

        ours, peer = alternate(runs, lazy, full_pull)
        with open_image(ref, options=ReadOptions(state_dir=str(root / "meta"), insecure=True)
                        ) as opened:
            tables = sum(b.ref.table_size for b in opened.blobs)
            metadata = opened.manifest.bootstrap.size + tables
    data_fetched = sorted(fetched)[len(fetched) // 2] - tables
    params = {"files": len(files), "bytes_read": read_bytes, "image_bytes": image_bytes,
              "metadata_bytes": metadata, "runs": runs}
    return [
        Figure("B3", "cold start: mount + import workload", "s", median(ours),
               "full pull + mount + workload", median(peer), params, higher_is_better=False,
               goal="well below the full pull"),
        Figure("B3", "cold start: file data fetched per byte read", "x",
               data_fetched / read_bytes, "ideal", 1.0, params,
               higher_is_better=False, goal="<= 1.2"),
        Figure("B3", "cold start: everything fetched (+ bootstrap, chunk table) per byte read",
               "x", (data_fetched + metadata) / read_bytes, "full pull",
               (image_bytes + metadata) / read_bytes, params, higher_is_better=False),
    ]
