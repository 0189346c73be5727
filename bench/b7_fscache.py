"""B7 fscache: the B3 workload over EROFS on fscache on-demand, in the qemu guest.

The guest runs a 6.1 kernel under TCG, so its times mean nothing; only
bytes and ratios count. One daemon in `--mode fscache`; each run mounts
the stdlib image (from an OCI layout: the guest has no network) under a
fsid of its own, so into empty caches, and reads the files of the B3 import
workload. On the host,
``run`` builds the image and boots the guest once; in the guest,
``python -m bench.b7_fscache SPEC`` does the runs and prints its findings.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .common import DATA_DIR, Figure, stdlib_tree, tests_on_path

ROOT = Path(__file__).resolve().parent.parent


def run(quick: bool) -> list[Figure]:
    tests_on_path()
    import guest

    from .b3_lazy_start import workload_files
    from .registry_setup import build_image

    why = guest.unavailable()
    if why:
        print(f"B7 skipped: {why}", file=sys.stderr)
        return []
    images = guest.images()
    runs = 3 if quick else 5
    files = workload_files(quick)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-b7-", dir=DATA_DIR) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        image = build_image(work / "layout", "stdlib", [stdlib_tree(quick)])
        spec = {"image": image, "files": files, "runs": runs}
        (work / "spec.json").write_text(json.dumps(spec))
        command = (f"export PYTHONPATH={ROOT}:{ROOT / 'tests'}\n"
                   f"exec {sys.executable} -m bench.b7_fscache {work / 'spec.json'}\n")
        result = guest.run(command, work, images=images)
        if result.rc != 0:
            raise RuntimeError(f"B7 guest failed (rc {result.rc}):\n{result.output[-3000:]}")
        found = json.loads(result.output.strip().splitlines()[-1])
    return _figures(found, runs, len(files))


def _figures(found: dict, runs: int, files: int) -> list[Figure]:
    read = found["bytes_read"]
    data = statistics.median(found["fetched"]) - found["table_bytes"]
    params = {"files": files, "bytes_read": read, "image_bytes": found["image_bytes"],
              "metadata_bytes": found["metadata_bytes"], "runs": runs,
              "kernel_reads": statistics.median(found["reads"]),
              "cache_bytes": statistics.median(found["cache"]),
              "cachefiles_bytes": statistics.median(found["cachefiles"]),
              "source": "oci layout (the guest has no network)", "kernel": "6.1, qemu TCG"}
    return [
        Figure("B7", "fscache cold start: file data fetched per byte read", "x", data / read,
               "ideal", 1.0, params, higher_is_better=False, goal="<= 1.2"),
        Figure("B7", "fscache cold start: everything fetched per byte read", "x",
               (data + found["metadata_bytes"]) / read, "full pull",
               (found["image_bytes"] + found["metadata_bytes"]) / read, params,
               higher_is_better=False),
        Figure("B7", "fscache: bytes the kernel asked for (READ) per byte read", "x",
               statistics.median(found["read_bytes"]) / read, "ideal", 1.0, params,
               higher_is_better=False),
        Figure("B7", "fscache: disk used (erofsd cache + cachefiles) per erofsd cache byte", "x",
               (statistics.median(found["cache"]) + statistics.median(found["cachefiles"]))
               / statistics.median(found["cache"]), "one copy", 1.0, params,
               higher_is_better=False),
    ]


def _disk_usage(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_blocks * 512
    return total


def in_guest(spec: dict) -> dict:
    """The runs, inside the guest: one daemon, and each run an image mounted under a fsid
    of its own and no domain, so a volume of its own: both caches start empty."""
    from daemonutil import DaemonProc
    from erofsd.cache.store import BlobCache
    from erofsd.images import open_image

    from .b3_lazy_start import run_workload

    found: dict = {"fetched": [], "reads": [], "read_bytes": [], "cache": [], "cachefiles": []}
    with open_image(spec["image"]) as opened:
        found["table_bytes"] = sum(b.table_size for b in opened.manifest.blobs)
        found["metadata_bytes"] = opened.manifest.bootstrap.size + found["table_bytes"]
        found["image_bytes"] = sum(b.size for b in opened.manifest.blobs)
        bootstrap_bytes = opened.manifest.bootstrap.size  # erofsd keeps a whole copy
    with DaemonProc(Path("/run/cache") / "b7") as daemon:
        for i in range(spec["runs"]):
            fsid, mnt = f"b7run{i}", daemon.mountpoint(f"m{i}")
            before = daemon.client.status()["daemon"]["fscache"]
            daemon.client.mount(spec["image"], mnt, fsid=fsid, mode="fscache")
            found["bytes_read"] = run_workload(mnt, spec["files"])
            status = daemon.client.status()
            after = status["daemon"]["fscache"]
            found["fetched"].append(sum(c["fetched_bytes"] for c in status["cookies"]
                                        if c["blob"] and c["volume"] == f"erofs,{fsid}"))
            found["reads"].append(after["reads"] - before["reads"])
            found["read_bytes"].append(after["read_bytes"] - before["read_bytes"])
            daemon.client.umount(mnt)
            time.sleep(1)  # cachefiles links its objects into the directory on their CLOSE
            found["cachefiles"].append(
                _disk_usage(daemon.state / "fscache" / "cache" / f"Ierofs,{fsid}"))
            found["cache"].append(bootstrap_bytes + sum(
                b.disk_bytes for v in BlobCache(daemon.state).list()
                if v.volume == f"erofs,{fsid}" for b in v.blobs))
            print(f"B7 run {i + 1}/{spec['runs']} done", file=sys.stderr, flush=True)
    return found


if __name__ == "__main__":
    print(json.dumps(in_guest(json.loads(Path(sys.argv[1]).read_text()))))
