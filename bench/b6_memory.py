"""B6 daemon memory and mount cost.

Memory: the daemon's resident set with 1, 10 and 100 mounts (fanotify, one
domain), and the resident set of one FUSE worker (FUSE mounts are one
process each). Mount cost: 1,000 fanotify mounts of one image in one domain,
each through the control API, then their unmounts: p50 and p99 of the last
hundred of each (when the table is longest), against mount(2) and umount2(2)
of the same files called directly, and the daemon's RSS at 1,000 mounts.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from erofsd.erofs.builder import Layer
from erofsd.erofs.dirlayer import read_dir_layer
from erofsd.images import export_kernel_files, open_image
from erofsd.kernel.mount import mount_erofs, umount
from erofsd.oci.image import build_to_layout
from erofsd.oci.reference import LayoutRef

from .common import MIB, Figure, stdlib_tree, tests_on_path

BUDGET = 150 * MIB  # at 100 mounts, and at 1,000
MANY = 1000


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _kernel_mounts(image: str, root: Path) -> tuple[list[float], list[float]]:
    """mount(2) and umount2(2) of the image's own files, 100 times (no daemon)."""
    with open_image(image) as opened:
        bootstrap, devices = export_kernel_files(opened, str(root / "files"))
    points = [root / "k" / str(i) for i in range(100)]
    for point in points:
        point.mkdir(parents=True)
    mounts = [_timed(lambda p=p: mount_erofs(bootstrap, str(p), devices)) for p in points]
    umounts = [_timed(lambda p=p: umount(str(p))) for p in points]
    return mounts, umounts


def _many_mounts(image: str, root: Path) -> tuple[list[float], list[float], int]:
    tests_on_path()
    from daemonutil import DaemonProc

    with DaemonProc(root / "many") as daemon:
        points = [daemon.mountpoint(f"m{i}") for i in range(MANY)]
        client = daemon.client
        mounts = [_timed(lambda i=i: client.mount(image, points[i], domain_id="many",
                                                   fsid=f"f{i}", mode="fanotify"))
                  for i in range(MANY)]
        rss = client.status()["daemon"]["rss_bytes"]
        umounts = [_timed(lambda p=p: client.umount(p)) for p in reversed(points)]
    return mounts[-100:], umounts[:100], rss


def _mount_figures(image: str, root: Path) -> list[Figure]:
    mounts, umounts, rss = _many_mounts(image, root)
    kernel_mounts, kernel_umounts = _kernel_mounts(image, root)
    params = {"mounts": MANY, "mode": "fanotify", "measured": "the last 100 of each"}
    ms = 1000
    figures = []
    for name, ours, theirs, goal in (("mount", mounts, kernel_mounts, (2, 10)),
                                     ("umount", umounts, kernel_umounts, (2, 10))):
        for q, limit in zip((50, 99), goal, strict=True):
            figures.append(Figure("B6", f"{name} p{q} at {MANY} mounts in one domain, "
                                  "through the API", "ms", _p(ours, q) * ms,
                                  f"kernel {name} of the same files", _p(theirs, q) * ms, params,
                                  higher_is_better=False, goal=f"<= {limit} ms"))
    figures.append(Figure("B6", f"daemon RSS with {MANY} mounts", "MiB", rss / MIB,
                          "budget", BUDGET / MIB, params, higher_is_better=False,
                          goal="<= 150 MiB"))
    return figures


def run(quick: bool) -> list[Figure]:
    tests_on_path()
    from daemonutil import DaemonProc

    figures = []
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-b6-") as tmp:
        root = Path(tmp)
        tree = stdlib_tree(quick) / "json"
        build_to_layout([Layer(*read_dir_layer(tree), str(tree))], LayoutRef(str(root / "img")),
                        chunk_size=1 << 20)
        image = f"oci:{root / 'img'}"
        with DaemonProc(root / "daemon") as daemon:
            mounted = 0
            for target in (1, 10, 100):
                while mounted < target:
                    daemon.client.mount(image, daemon.mountpoint(f"m{mounted}"),
                                        domain_id="mem", fsid=f"f{mounted}", mode="fanotify")
                    mounted += 1
                rss = daemon.client.status()["daemon"]["rss_bytes"]
                figures.append(Figure("B6", f"daemon RSS with {target} mount(s)", "MiB",
                                      rss / MIB, "budget at 100 mounts", BUDGET / MIB,
                                      {"mounts": target, "mode": "fanotify"},
                                      higher_is_better=False,
                                      goal="<= 150 MiB" if target == 100 else ""))
            view = daemon.client.mount(image, daemon.mountpoint("fuse"), mode="fuse")
            figures.append(Figure("B6", "one FUSE worker's RSS", "MiB",
                                  _rss(view["worker_pid"]) / MIB, "budget at 100 mounts",
                                  BUDGET / MIB, {"mode": "fuse"}, higher_is_better=False))
        figures += _mount_figures(image, root)
    return figures
