"""B6 daemon memory: resident set with 1, 10 and 100 mounts (fanotify, one domain),
and the resident set of one FUSE worker (FUSE mounts are one process each)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from erofsd.erofs.builder import Layer
from erofsd.erofs.dirlayer import read_dir_layer
from erofsd.oci.image import build_to_layout
from erofsd.oci.reference import LayoutRef

from .common import MIB, Figure, stdlib_tree, tests_on_path

BUDGET = 150 * MIB  # at 100 mounts


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096


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
    return figures
