"""B3 cold lazy start: a recorded workload against the stdlib image in a registry.

The workload reads the files that `python3 -c "import json, email,
http.client, sqlite3"` opens (recorded once on the host with an audit
hook). erofsd: a fresh daemon mounts the image lazily (fanotify) and the
workload runs; the image is built three ways (zstd blobs with small chunks
packed in 64 KiB frames, the default; zstd with every chunk a frame of its
own; uncompressed blobs), each in its own registry. Peer: a full pull of
the default image (every blob downloaded with the same HTTP client),
decoded, kernel-mounted, the same workload. All four alternate.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from erofsd.erofs.codec import Compression
from erofsd.images import ReadOptions, export_kernel_files, open_image
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


def workload(quick: bool) -> tuple[list[str], Path, int]:
    """(the workload's files, the tree they are in, the bytes they hold)."""
    files, tree = workload_files(quick), stdlib_tree(quick)
    return files, tree, sum((tree / p).stat().st_size for p in files)


def run_workload(root: str, files: list[str]) -> int:
    total = 0
    for rel in files:
        with open(os.path.join(root, rel), "rb") as f:
            total += len(f.read())
    return total


def _metadata(ref: str, state: Path) -> tuple[int, int]:
    """What a mount fetches before any file data: (bootstrap bytes, chunk table bytes)."""
    with open_image(ref, options=ReadOptions(state_dir=str(state), insecure=True)) as opened:
        return opened.manifest.bootstrap.size, sum(b.ref.table_size for b in opened.blobs)


def run(quick: bool) -> list[Figure]:
    tests_on_path()
    from daemonutil import DaemonProc

    runs = 3 if quick else 5
    files, tree, read_bytes = workload(quick)
    fetched: dict[str, list[int]] = {"zstd": [], "alone": [], "none": []}
    with pushed_image("stdlib-b3", [tree]) as (ref, image_bytes), \
            pushed_image("stdlib-b3-alone", [tree], compression=Compression(frame_size=0)) \
            as (alone_ref, _), \
            pushed_image("stdlib-b3-none", [tree], compression=None) as (none_ref, none_bytes), \
            tempfile.TemporaryDirectory(prefix="erofsd-bench-b3-") as tmp:
        root = Path(tmp)
        metadata = {name: _metadata(r, root / f"meta-{name}")
                    for name, r in (("zstd", ref), ("alone", alone_ref), ("none", none_ref))}

        def lazy(name: str, image: str) -> Sample:
            shutil.rmtree(root / "lazy", ignore_errors=True)
            with DaemonProc(root / "lazy") as daemon:
                drop_caches()
                started = time.perf_counter()
                mnt = daemon.mountpoint("m")
                daemon.client.mount(image, mnt, insecure=True)
                run_workload(mnt, files)
                wall = time.perf_counter() - started
                total = sum(c["fetched_bytes"] for c in daemon.client.status()["cookies"])
                fetched[name].append(total - metadata[name][1])  # cookies count their tables
                return Sample(wall, 0)

        def full_pull() -> Sample:
            shutil.rmtree(root / "pull", ignore_errors=True)
            drop_caches()
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "erofsd", "pull", ref, f"oci:{root / 'pull'}:x",
                            "--insecure", "--quiet"], check=True)
            with open_image(f"oci:{root / 'pull'}:x") as opened:  # its blobs are compressed
                bootstrap, blobs = export_kernel_files(opened, str(root / "pull-files"))
            mnt = root / "pull-mnt"
            mnt.mkdir(exist_ok=True)
            mount_erofs(bootstrap, str(mnt), blobs)
            try:
                run_workload(str(mnt), files)
            finally:
                umount(str(mnt))
                shutil.rmtree(root / "pull-files")
            return Sample(time.perf_counter() - started, 0)

        ours, alone, plain, peer = alternate(
            runs, lambda: lazy("zstd", ref), lambda: lazy("alone", alone_ref),
            lambda: lazy("none", none_ref), full_pull)
    data = {name: statistics.median(values) for name, values in fetched.items()}
    params = {"files": len(files), "bytes_read": read_bytes, "image_bytes": image_bytes,
              "uncompressed_image_bytes": none_bytes, "metadata_bytes": sum(metadata["zstd"]),
              "runs": runs}
    return [
        Figure("B3", "cold start: mount + import workload", "s", median(ours),
               "full pull + mount + workload", median(peer), params, higher_is_better=False,
               goal="well below the full pull"),
        Figure("B3", "cold start: mount + import workload, zstd blobs", "s", median(ours),
               "uncompressed blobs", median(plain), params, higher_is_better=False,
               goal=">= 0.91 (at most 10% slower)"),
        Figure("B3", "cold start: small chunks packed in 64 KiB frames", "s", median(ours),
               "every chunk a frame of its own", median(alone), params,
               higher_is_better=False),
        Figure("B3", "cold start: file data fetched per byte read, zstd blobs", "x",
               data["zstd"] / read_bytes, "uncompressed blobs", data["none"] / read_bytes,
               params, higher_is_better=False, goal="<= 0.5"),
        Figure("B3", "cold start: file data fetched per byte read, 64 KiB frames", "x",
               data["zstd"] / read_bytes, "every chunk a frame of its own",
               data["alone"] / read_bytes, params, higher_is_better=False),
        Figure("B3", "cold start: everything fetched (+ bootstrap, chunk table) per byte read",
               "x", (data["zstd"] + sum(metadata["zstd"])) / read_bytes, "full pull",
               (image_bytes + metadata["zstd"][0]) / read_bytes, params,  # blobs hold tables
               higher_is_better=False),
    ]
