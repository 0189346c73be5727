"""B8 container start: from pull to the first output of a command, through containerd.

The image is realistic: a Debian bookworm minbase root filesystem with
python3, made by debootstrap from Debian's own packages (cached in the
bench folder), one gzip layer as an ordinary image and its erofsd
conversion, both in one docker-registry on 127.0.0.1. The command reads a
realistic part of it: ``python3 -c "import json, email, http.client,
sqlite3, asyncio, unittest"``, which prints a line when done.

- erofsd: ``erofsd containerd pull``, then ``ctr run --snapshotter erofsd``,
  the erofsd cache empty;
- erofsd with prefetch: the same in a containerd namespace whose images the
  snapshotter mounts with ``prefetch = true`` (the whole image is fetched
  in the background from the mount on);
- the peer: containerd's own overlayfs snapshotter, ``ctr image pull`` of
  the ordinary image, then ``ctr run``.

Both start from nothing each run (the image removed with containerd's GC,
the erofsd cache emptied, page caches dropped) and alternate. Bytes are
what the registry sent, from its access log: the same count for both.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import DATA_DIR, MIB, Figure, Sample, alternate, drop_caches, median, tests_on_path

WORKLOAD = ("python3", "-c", "import json, email, http.client, sqlite3, asyncio, unittest; "
            "print('imported')")
MIRROR = "http://deb.debian.org/debian"


def debian_python_tree() -> Path | None:
    """The rootfs (built once; None, saying why, where debootstrap cannot run)."""
    return debian_tree("debian-python", ["python3"], "B8")


def debian_tree(name: str, include: list[str], who: str) -> Path | None:
    """Debian bookworm minbase with ``include``, made by debootstrap once and cached in the
    bench folder as ``name``; None, saying why, where debootstrap cannot run."""
    target = DATA_DIR / name
    if target.exists():
        return target
    if shutil.which("debootstrap") is None:
        print(f"{who} skipped: debootstrap is not installed", file=sys.stderr)
        return None
    tmp = target.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    packages = " + ".join(["minbase", *include])
    print(f"{who}: debootstrap of bookworm {packages} (once, a few minutes)", file=sys.stderr)
    extra = [f"--include={','.join(include)}"] if include else []
    result = subprocess.run(["debootstrap", "--variant=minbase", *extra, "bookworm",
                             str(tmp), MIRROR], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{who} skipped: debootstrap failed: {result.stderr[-500:]}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):  # what an image leaves out
        shutil.rmtree(tmp / cache, ignore_errors=True)
    tmp.rename(target)
    return target


def _layer(tree: Path) -> bytes:
    tar = subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "-cf", "-", "."],
                         check=True, capture_output=True).stdout
    return tar


class SentBytes:
    """Bytes the registry sent since ``reset``, from its access log."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.mark = 0

    def reset(self) -> None:
        self.mark = len(self.registry.requests())

    def sent(self) -> int:
        return sum(r.size for r in self.registry.requests()[self.mark:] if r.method == "GET")


def _until_output(args: list[str]) -> float:
    """Seconds from now until the command prints its line (then it is waited for)."""
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    elapsed = time.perf_counter() - start
    _, err = process.communicate(timeout=600)
    if line.strip() != "imported":
        raise RuntimeError(f"B8: {' '.join(args)} printed {line!r}: {err[-500:]}")
    return elapsed


def _mid(values: list[float]) -> float:
    return statistics.median(values)


def run(quick: bool) -> list[Figure]:
    tree = debian_python_tree()
    if tree is None:
        return []
    tests_on_path()
    from containerdkit import Node, have_containerd, leftovers, remove_leftovers
    from erofsd.containerd.pull import containerd_name
    from erofsd.localregistry import Registry
    from erofsd.oci.convert import convert
    from erofsd.oci.copy import push
    from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
    from erofsd.oci.transport import Transport
    from imagekit import write_image

    why = have_containerd()
    if why:
        print(f"B8 skipped: {why}", file=sys.stderr)
        return []
    runs = 3 if quick else 5
    before = leftovers()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-b8-", dir=DATA_DIR) as tmp:
        work = Path(tmp)
        registry = Registry(work / "registry", access_log=True)
        node = None
        try:
            layer = _layer(tree)
            source = write_image(work / "src", "debian", [layer])
            gzip_size = sum(f.stat().st_size for f in (work / "src" / "blobs").rglob("*")
                            if f.stat().st_size > len(layer) // 20)  # the layer, not the JSON
            ordinary = registry.ref("bench/debian-python", "ordinary")
            push(parse_layout_ref(source), parse_registry_ref(ordinary), Transport(insecure=True))
            lazy = registry.ref("bench/debian-python", "erofsd")
            convert(source, lazy, state_dir=work / "convert-state", insecure=True)
            node = Node(work / "node", registry.host,
                        config_extra="[snapshotter.namespaces.prefetch]\nprefetch = true\n")
            ctr = node.containerd
            counter = SentBytes(registry)
            names = {"lazy": containerd_name(lazy), "prefetch": containerd_name(lazy),
                     "ordinary": containerd_name(ordinary)}
            namespaces = {"lazy": "default", "prefetch": "prefetch", "ordinary": "default"}
            bytes_sent: dict[str, list[int]] = {kind: [] for kind in names}
            phases: dict[str, list[tuple[float, float]]] = {kind: [] for kind in names}

            def start(kind: str) -> Sample:
                name, namespace = names[kind], namespaces[kind]
                ctr.ctr("image", "rm", "--sync", name, namespace=namespace, check=False)
                if kind != "ordinary":  # no namespace keeps the image's blobs in the cache
                    for other in ("lazy", "prefetch"):
                        ctr.ctr("image", "rm", "--sync", names[other],
                                namespace=namespaces[other], check=False)
                    subprocess.run([sys.executable, "-m", "erofsd", "cache", "gc",
                                    "--state-dir", str(node.daemon.state)], check=True,
                                   capture_output=True)
                drop_caches()
                counter.reset()
                t0 = time.perf_counter()
                if kind == "ordinary":
                    ctr.ctr("image", "pull", "--plain-http", name, timeout=600)
                    run_args = []
                else:
                    node.pull(lazy, "--namespace", namespace)
                    run_args = ["--snapshotter", "erofsd"]
                pulled = time.perf_counter() - t0
                container = f"b8-{kind}-{time.monotonic_ns()}"
                ran = _until_output(["ctr", "--address", ctr.address, "--namespace", namespace,
                                     "run", "--rm", *run_args, name, container, *WORKLOAD])
                bytes_sent[kind].append(counter.sent())
                phases[kind].append((pulled, ran))
                return Sample(pulled + ran, 0.0)

            ours, prefetched, peers = alternate(runs, lambda: start("lazy"),
                                                lambda: start("prefetch"),
                                                lambda: start("ordinary"))
        finally:
            if node is not None:
                node.stop()
            registry.stop()
            remove_leftovers(before)
    params = {"runs": runs, "image": "debian bookworm minbase + python3",
              "tar_mib": round(len(layer) / MIB, 1), "gzip_layer_mib": round(gzip_size / MIB, 1),
              "command": " ".join(WORKLOAD),
              "pull_s": {k: round(_mid([p for p, _ in v]), 3) for k, v in phases.items()},
              "run_s": {k: round(_mid([r for _, r in v]), 3) for k, v in phases.items()}}
    return [
        Figure("B8", "container start: pull to first output", "s", median(ours),
               "containerd overlayfs, ordinary image", median(peers), params,
               higher_is_better=False, goal="<= 0.2 x overlayfs"),
        Figure("B8", "bytes from the registry for that start", "MiB",
               _mid(bytes_sent["lazy"]) / MIB, "containerd overlayfs, ordinary image",
               _mid(bytes_sent["ordinary"]) / MIB, params, higher_is_better=False),
        Figure("B8", "container start with prefetch: pull to first output", "s",
               median(prefetched), "containerd overlayfs, ordinary image", median(peers),
               params, higher_is_better=False, goal="<= 0.2 x overlayfs"),
        Figure("B8", "bytes from the registry by the start with prefetch", "MiB",
               _mid(bytes_sent["prefetch"]) / MIB, "containerd overlayfs, ordinary image",
               _mid(bytes_sent["ordinary"]) / MIB, params, higher_is_better=False),
    ]

