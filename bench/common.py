"""What every benchmark shares: timing, alternation, medians, data sets, output.

The machine is noisy, so a figure is never one timing: erofsd and its peer
run alternately (A B A B ...), each figure reports medians, and the ratio
between the two is the number to trust.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

MIB = 1 << 20
DATA_DIR = Path(os.environ.get("EROFSD_BENCH_DIR", "/var/tmp/erofsd-bench"))


@dataclasses.dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float


@dataclasses.dataclass
class Figure:
    id: str
    metric: str
    unit: str
    erofsd: float
    peer: str
    peer_value: float
    params: dict
    higher_is_better: bool = True
    goal: str = ""
    meaning: str = ""

    @property
    def ratio(self) -> float:
        """erofsd relative to the peer, > 1 means erofsd is better."""
        if not self.peer_value or not self.erofsd:
            return float("nan")
        r = self.erofsd / self.peer_value
        return r if self.higher_is_better else 1 / r

    def to_json(self) -> dict:
        return {"id": self.id, "metric": self.metric, "unit": self.unit,
                "erofsd": round(self.erofsd, 4), "peer": self.peer,
                "peer_value": round(self.peer_value, 4),
                "ratio": None if math.isnan(self.ratio) else round(self.ratio, 3),
                "params": self.params}


def run_timed(args: list[str], **kwargs) -> Sample:
    """Run a command to completion; wall time and the CPU time of it and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall, cpu)


def alternate(runs: int, *contenders: Callable[[], Sample]) -> tuple[list[Sample], ...]:
    """A B A B ... (or A B C A B C ...): all see the same drift of a noisy machine."""
    samples: tuple[list[Sample], ...] = tuple([] for _ in contenders)
    for _ in range(runs):
        for run, kept in zip(contenders, samples, strict=True):
            kept.append(run())
    return samples


def median(samples: list[Sample], field: str = "wall") -> float:
    return statistics.median(getattr(s, field) for s in samples)


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def erofsd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "erofsd", *args]


def tree_bytes(root: Path) -> tuple[int, int]:
    """(regular files, bytes in them)."""
    files = size = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files += 1
            size += path.stat().st_size
    return files, size


QUICK_LEAVES_OUT = frozenset({"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo",
                              "lib2to3", "distutils", "unittest", "ensurepip", "pydoc_data",
                              f"config-{sysconfig.get_config_var('LDVERSION')}-"
                              f"{sysconfig.get_config_var('MULTIARCH')}"})


def stdlib_tree(quick: bool = False) -> Path:
    """Data set 1: a copy of this interpreter's standard library (site-packages left out).

    Under ``--quick``, a fifth of it: the test suites and the big tools left out.
    """
    target = DATA_DIR / ("stdlib-quick" if quick else "stdlib")
    if not target.exists():
        source = Path(sysconfig.get_paths()["stdlib"])
        tmp = target.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)

        def ignore(directory: str, names: list[str]) -> list[str]:
            left_out = QUICK_LEAVES_OUT if quick else frozenset()
            top = ["site-packages"] if Path(directory) == source else []
            return top + [n for n in names if n in left_out]

        shutil.copytree(source, tmp, symlinks=True, ignore=ignore)
        tmp.rename(target)
    return target


def large_files_tree(count: int, size: int, seed: int = 2) -> Path:
    """Data set 2: files half random, half text, made from a seed."""
    target = DATA_DIR / f"large-{count}x{size // MIB}M"
    if target.exists():
        return target
    tmp = target.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randrange(2, 10)))
             for _ in range(5000)]
    for i in range(count):
        with open(tmp / f"file{i}", "wb") as f:
            written = 0
            while written < size:
                if written < size // 2:
                    block = rng.randbytes(MIB)
                else:
                    block = b" ".join(rng.choice(words) for _ in range(MIB // 6))[:MIB]
                    block += b"\n" * (MIB - len(block))
                f.write(block[:size - written])
                written += len(block[:size - written])
    tmp.rename(target)
    return target


def print_table(figures: list[Figure]) -> None:
    print("| id | metric | erofsd | peer | peer value | ratio | goal |")
    print("|---|---|---|---|---|---|---|")
    for f in figures:
        print(f"| {f.id} | {f.metric} ({f.unit}) | {f.erofsd:.3g} | {f.peer} | "
              f"{f.peer_value:.3g} | {f.ratio:.2f} | {f.goal} |")


def write_json(figures: list[Figure], path: str) -> None:
    with open(path, "w") as out:
        for f in figures:
            out.write(json.dumps(f.to_json()) + "\n")


def tests_on_path() -> None:
    """The benchmarks reuse the tests' helpers (a daemon per run) rather than copy them."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def time_tar(mountpoint: str) -> Sample:
    """`tar cf - -C MOUNT . | cat > /dev/null` with the page cache dropped first.

    Not `tar cf /dev/null`: GNU tar notices /dev/null and reads no file data.
    """
    drop_caches()
    return run_timed(["sh", "-c", f"tar cf - -C '{mountpoint}' . | cat > /dev/null"])


def time_stat_walk(mountpoint: str) -> Sample:
    """`find MOUNT -printf '%s %m'` (an lstat of every entry) with the caches dropped first."""
    drop_caches()
    return run_timed(["sh", "-c", f"find '{mountpoint}' -printf '%s %m\\n' > /dev/null"])
