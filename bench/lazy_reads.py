"""B3 lazy reads from a docker-registry on 127.0.0.1 (the figures of the cache issue).

- cold `erofsd extract` of the stdlib image through a fresh cache, beside a
  full pull (`erofsd pull`, every blob downloaded) then a local extract;
- 5% of the files, chosen at random, read through a fresh cache: bytes
  fetched per byte read, readahead off and at its default.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
from pathlib import Path

from erofsd.cache.store import BlobCache
from erofsd.images import ReadOptions, open_image

from .common import (
    MIB,
    Figure,
    Sample,
    alternate,
    erofsd_command,
    median,
    run_timed,
    stdlib_tree,
    tree_bytes,
)
from .registry_setup import pushed_image


def _fetched(state: Path) -> int:
    return sum(b.fetched_bytes for v in BlobCache(state).list() for b in v.blobs)


def _cold_extract(ref: str, work: Path) -> tuple[Sample, int]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    sample = run_timed(erofsd_command("extract", ref, str(work / "out"), "--quiet", "--insecure",
                                      "--state-dir", str(work / "state")))
    return sample, _fetched(work / "state")


def _pull_then_extract(ref: str, work: Path) -> Sample:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    a = run_timed(erofsd_command("pull", ref, f"oci:{work / 'layout'}:x", "--quiet", "--insecure"))
    b = run_timed(erofsd_command("extract", f"oci:{work / 'layout'}:x", str(work / "out"),
                                 "--quiet"))
    return Sample(a.wall + b.wall, a.cpu + b.cpu)


def _random_files(ref: str, state: Path, readahead: int | None, seed: int) -> tuple[int, int]:
    shutil.rmtree(state, ignore_errors=True)
    options = ReadOptions(state_dir=str(state), insecure=True, readahead=readahead)
    with open_image(ref, options=options) as opened:
        img = opened.image
        files = sorted({i.nid: i for _, i in img.walk() if i.is_reg and i.size}.values(),
                       key=lambda i: i.nid)
        chosen = random.Random(seed).sample(files, max(1, len(files) // 20))
        read = sum(len(img.read(i, 0, i.size)) for i in chosen)
        table_bytes = sum(b.ref.table_size for b in opened.blobs)
    return read, _fetched(state) - table_bytes


def run(quick: bool) -> list[Figure]:
    runs = 3 if quick else 5
    tree = stdlib_tree(quick)
    figures = []
    with pushed_image("stdlib", [tree]) as (ref, image_bytes), \
            tempfile.TemporaryDirectory(prefix="erofsd-bench-") as tmp:
        work = Path(tmp)
        fetched = []

        def lazy() -> Sample:
            sample, got = _cold_extract(ref, work / "lazy")
            fetched.append(got)
            return sample

        ours, peer = alternate(runs, lazy, lambda: _pull_then_extract(ref, work / "pull"))
        mib = tree_bytes(tree)[1] / MIB  # file data: compression does not change it
        params = {"image_bytes": image_bytes, "file_mib": round(mib, 1), "runs": runs}
        figures.append(Figure("B3", "cold extract from the registry (MiB of files)", "MiB/s",
                              mib / median(ours), "full pull, then extract", mib / median(peer),
                              params, goal=">= 1.0"))
        figures.append(Figure("B3", "cold extract: bytes fetched per byte of image", "x",
                              statistics.median(fetched) / image_bytes, "ideal", 1.0, params,
                              higher_is_better=False, goal="<= 1.0"))
        for label, readahead in (("readahead off", 0), ("default readahead", None)):
            ratios = []
            for seed in range(runs):
                read, got = _random_files(ref, work / "rand", readahead, seed)
                ratios.append(got / read)
            figures.append(Figure("B3", f"5% of files read: bytes fetched per byte read, {label}",
                                  "x", statistics.median(ratios), "ideal", 1.0,
                                  {"runs": runs, "readahead": readahead},
                                  higher_is_better=False,
                                  goal="<= 1.2" if readahead == 0 else ""))
    return figures
