"""B5 miss latency: 4 KiB random reads of data not yet cached, over the registry.

erofsd: a fresh daemon mounts a 128 MiB random file (fanotify) from a
docker-registry on 127.0.0.1; each read lands in a chunk not read before, so
each one waits for a fetch, its verification and its store. Peer: the same
number of 4 KiB ranged GETs of the blob with a plain httpx client, the floor
that the registry and the loopback set. Images with 1 MiB and 64 KiB chunks.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from erofsd.images import ReadOptions, open_image

from .common import DATA_DIR, MIB, Figure, Sample, alternate, tests_on_path
from .registry_setup import pushed_image

READ = 4096
FILE_SIZE = 128 * MIB


def random_file_tree() -> Path:
    root = DATA_DIR / "latency-128M"
    if not root.exists():
        tmp = root.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        rng = random.Random(5)
        with open(tmp / "data", "wb") as f:
            for _ in range(FILE_SIZE // MIB):
                f.write(rng.randbytes(MIB))
        tmp.rename(root)
    return root


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def offsets(chunk_size: int, count: int, seed: int) -> list[int]:
    """4 KiB-aligned offsets, one in each of ``count`` distinct chunks (never the first)."""
    chunks = random.Random(seed).sample(range(1, FILE_SIZE // chunk_size), count)
    rng = random.Random(seed + 1)
    return [c * chunk_size + rng.randrange(chunk_size // READ) * READ for c in chunks]


def run(quick: bool) -> list[Figure]:
    runs, count = (3, 50) if quick else (5, 100)
    figures = []
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-b5-") as tmp:
        for chunk_size in (MIB, 64 * 1024):
            with pushed_image(f"lat{chunk_size}", [random_file_tree()], chunk_size) as (ref, _):
                ours, peer = _latencies(ref, Path(tmp), chunk_size, runs, count)
            params = {"chunk_size": chunk_size, "reads_per_run": count, "runs": runs}
            for label, fraction, goal in (("p50", 0.5, "<= 6 ms"), ("p99", 0.99, "<= 15 ms")):
                figures.append(Figure(
                    "B5", f"4 KiB miss latency {label}, {chunk_size // 1024} KiB chunks", "ms",
                    statistics.median(percentile(t, fraction) for t in ours) * 1000,
                    "plain 4 KiB ranged GET",
                    statistics.median(percentile(t, fraction) for t in peer) * 1000,
                    params, higher_is_better=False, goal=goal))
    return figures


def _latencies(ref: str, root: Path, chunk_size: int, runs: int, count: int
               ) -> tuple[list[list[float]], list[list[float]]]:
    """Per run, the seconds of each read: erofsd's and the plain GETs', alternating."""
    tests_on_path()
    from daemonutil import DaemonProc

    with open_image(ref, options=ReadOptions(state_dir=str(root / "meta"),
                                             insecure=True)) as opened:
        digest = opened.manifest.blobs[0].digest
    host, _, name = ref.removeprefix("docker://").partition("/")
    url = f"http://{host}/v2/{name.rpartition(':')[0]}/blobs/{digest}"
    seeds = iter(range(1000))
    ours: list[list[float]] = []
    peer: list[list[float]] = []

    def erofsd_reads() -> Sample:
        shutil.rmtree(root / "daemon", ignore_errors=True)  # a cold cache
        with DaemonProc(root / "daemon") as daemon:
            mnt = daemon.mountpoint("m")
            daemon.client.mount(ref, mnt, insecure=True)
            fd = os.open(os.path.join(mnt, "data"), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            times = []
            for offset in offsets(chunk_size, count, next(seeds)):
                started = time.perf_counter()
                os.pread(fd, READ, offset)
                times.append(time.perf_counter() - started)
            os.close(fd)
            ours.append(times)
            return Sample(sum(times), 0)

    def plain_gets() -> Sample:
        times = []
        with httpx.Client() as client:
            for offset in offsets(chunk_size, count, next(seeds)):
                started = time.perf_counter()
                response = client.get(url, headers={
                    "Range": f"bytes={offset}-{offset + READ - 1}"})
                response.raise_for_status()
                times.append(time.perf_counter() - started)
        peer.append(times)
        return Sample(sum(times), 0)

    alternate(runs, erofsd_reads, plain_gets)
    return ours, peer
