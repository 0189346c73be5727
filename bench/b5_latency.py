"""B5 miss latency: 4 KiB random reads of data not yet cached, over the registry.

erofsd: a fresh daemon mounts a 128 MiB file (fanotify) from a
docker-registry on 127.0.0.1; each read lands in a chunk not read before, so
each one waits for a fetch, its verification and its store. Peer: the same
number of 4 KiB ranged GETs of the blob on one kept-alive connection of
Python's own http.client, the floor that the registry and the loopback set.
Images with 1 MiB and 64 KiB chunks of random bytes (which stay raw in a
compressed blob), then text with 1 MiB chunks as zstd blobs against the
same text uncompressed. Last, throughput: 2, 8 and 32 readers at once, each
reading 4 KiB in chunks not read before (64 KiB chunks), against as many
threads doing plain ranged GETs, each with its own connection: reads per
second of all of them together.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import statistics
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from erofsd.images import ReadOptions, open_image

from .common import DATA_DIR, MIB, Figure, Sample, alternate, tests_on_path
from .registry_setup import pushed_image

READ = 4096
FILE_SIZE = 128 * MIB
READERS = (2, 8, 32)


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


def text_file_tree() -> Path:
    """128 MiB of real text that compresses about 4:1: this interpreter's standard library
    sources, each MiB from its own offset (so no two chunks are the same)."""
    root = DATA_DIR / "latency-text-128M"
    if not root.exists():
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        source = b"".join(p.read_bytes() for p in sorted(stdlib.rglob("*.py"))[:3000])
        tmp = root.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        rng = random.Random(6)
        with open(tmp / "data", "wb") as f:
            for _ in range(FILE_SIZE // MIB):
                at = rng.randrange(len(source) - MIB)
                f.write(source[at:at + MIB])
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


def _figures(label: str, ours: list[list[float]], peer_name: str, peer: list[list[float]],
             params: dict, goals: tuple[str, str] = ("", "")) -> list[Figure]:
    return [Figure("B5", f"4 KiB miss latency {name}, {label}", "ms",
                   statistics.median(percentile(t, fraction) for t in ours) * 1000, peer_name,
                   statistics.median(percentile(t, fraction) for t in peer) * 1000,
                   params, higher_is_better=False, goal=goal)
            for (name, fraction), goal in zip((("p50", 0.5), ("p99", 0.99)), goals,
                                              strict=True)]


def run(quick: bool) -> list[Figure]:
    runs, count = (3, 50) if quick else (5, 100)
    figures = []
    seeds = iter(range(1000))
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-b5-") as tmp:
        root = Path(tmp)
        for chunk_size in (MIB, 64 * 1024):
            with pushed_image(f"lat{chunk_size}", [random_file_tree()], chunk_size) as (ref, _):
                url = _blob_url(ref, root)
                ours: list[list[float]] = []
                peer: list[list[float]] = []
                alternate(runs, partial(_erofsd_reads, ref, root, chunk_size, count, seeds, ours),
                          partial(_plain_gets, url, chunk_size, count, seeds, peer))
                params = {"chunk_size": chunk_size, "reads_per_run": count, "runs": runs}
                figures += _figures(f"{chunk_size // 1024} KiB chunks", ours,
                                    "plain 4 KiB ranged GET", peer, params,
                                    ("<= the GET + 1 ms", "<= the GET + 3 ms"))
                if chunk_size != MIB:
                    figures += _parallel_figures(ref, url, root, chunk_size, runs, seeds)
        with pushed_image("lat-text", [text_file_tree()]) as (ref, _), \
                pushed_image("lat-text-none", [text_file_tree()], compression=None) \
                as (plain_ref, _):
            zstd: list[list[float]] = []
            plain: list[list[float]] = []
            alternate(runs, partial(_erofsd_reads, ref, root, MIB, count, seeds, zstd),
                      partial(_erofsd_reads, plain_ref, root, MIB, count, seeds, plain))
        params = {"chunk_size": MIB, "reads_per_run": count, "runs": runs, "data": "text"}
        figures += _figures("text, 1 MiB chunks, zstd blobs", zstd, "uncompressed blobs",
                            plain, params)
    return figures


def _together(readers: int, work) -> float:
    """``work(i)`` in ``readers`` threads at once: seconds until the last is done."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(readers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def _parallel_erofsd(ref: str, root: Path, chunk_size: int, readers: int, count: int,
                     seeds: Iterator[int]) -> Sample:
    tests_on_path()
    from daemonutil import DaemonProc

    spread = offsets(chunk_size, count, next(seeds))
    shutil.rmtree(root / "daemon", ignore_errors=True)
    with DaemonProc(root / "daemon") as daemon:
        mnt = daemon.mountpoint("m")
        daemon.client.mount(ref, mnt, insecure=True)
        path = os.path.join(mnt, "data")

        def read(i: int) -> None:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            for offset in spread[i::readers]:
                os.pread(fd, READ, offset)
            os.close(fd)

        return Sample(_together(readers, read), 0)


def _parallel_gets(url: str, chunk_size: int, readers: int, count: int,
                   seeds: Iterator[int]) -> Sample:
    spread = offsets(chunk_size, count, next(seeds))
    connections = [_connect(url) for _ in range(readers)]

    def get(i: int) -> None:
        for offset in spread[i::readers]:
            _ranged_get(connections[i], url, offset)

    try:
        return Sample(_together(readers, get), 0)
    finally:
        for connection in connections:
            connection.close()


def _parallel_figures(ref: str, url: str, root: Path, chunk_size: int, runs: int,
                      seeds: Iterator[int]) -> list[Figure]:
    figures = []
    for readers in READERS:
        count = max(32, 8 * readers)  # reads per run, split among the readers
        a, b = alternate(runs, partial(_parallel_erofsd, ref, root, chunk_size, readers, count,
                                       seeds),
                         partial(_parallel_gets, url, chunk_size, readers, count, seeds))
        rate = statistics.median(count / s.wall for s in a)
        peer = statistics.median(count / s.wall for s in b)
        figures.append(Figure("B5", f"cold 4 KiB random reads, {readers} readers at once, "
                              f"{chunk_size // 1024} KiB chunks", "reads/s", rate,
                              f"{readers} threads of plain ranged GETs", peer,
                              {"readers": readers, "reads_per_run": count, "runs": runs},
                              goal=">= 0.95"))
    return figures


def _blob_url(ref: str, root: Path) -> str:
    with open_image(ref, options=ReadOptions(state_dir=str(root / "meta"),
                                             insecure=True)) as opened:
        digest = opened.manifest.blobs[0].digest
    host, _, name = ref.removeprefix("docker://").partition("/")
    return f"http://{host}/v2/{name.rpartition(':')[0]}/blobs/{digest}"


def _erofsd_reads(ref: str, root: Path, chunk_size: int, count: int, seeds: Iterator[int],
                  kept: list[list[float]]) -> Sample:
    """One run: a fresh daemon mounts ``ref``, then 4 KiB reads, each in a chunk not read
    before; the seconds of each read go to ``kept``."""
    tests_on_path()
    from daemonutil import DaemonProc

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
    kept.append(times)
    return Sample(sum(times), 0)


def _plain_gets(url: str, chunk_size: int, count: int, seeds: Iterator[int],
                kept: list[list[float]]) -> Sample:
    times = []
    connection = _connect(url)
    try:
        for offset in offsets(chunk_size, count, next(seeds)):
            started = time.perf_counter()
            _ranged_get(connection, url, offset)
            times.append(time.perf_counter() - started)
    finally:
        connection.close()
    kept.append(times)
    return Sample(sum(times), 0)


def _connect(url: str) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)


def _ranged_get(connection: http.client.HTTPConnection, url: str, offset: int) -> None:
    connection.request("GET", urlsplit(url).path,
                       headers={"Range": f"bytes={offset}-{offset + READ - 1}"})
    reply = connection.getresponse()
    if reply.status != 206 or len(reply.read()) != READ:
        raise RuntimeError(f"{url}: HTTP {reply.status} to a ranged GET")
