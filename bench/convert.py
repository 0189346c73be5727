"""B1 convert: `erofsd convert` of an ordinary ~300 MiB image (gzip layers).

- against the two-step path a user would take otherwise: GNU tar extracts
  the layers into a directory, then mkfs.erofs --chunksize=1M --blobdev
  builds the image (throughput in MiB of uncompressed layers per second,
  and peak resident memory), and against erofsd writing uncompressed
  blobs (`--compression none`);
- a second image on the same base layer, converted after the first: the
  base is not read again.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import (
    DATA_DIR,
    MIB,
    Figure,
    Sample,
    alternate,
    large_files_tree,
    median,
    run_timed,
    stdlib_tree,
    tests_on_path,
)

PEAK = ("import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _peak_mib(args: list[str]) -> float:
    out = subprocess.run([sys.executable, "-c", PEAK, *args], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def _images(quick: bool) -> tuple[Path, list[Path], int]:
    """(layout with tags a and b, gzip layers of a, uncompressed bytes of a)."""
    tests_on_path()
    from imagekit import write_image

    root = DATA_DIR / ("convert-src-quick" if quick else "convert-src")
    layers_dir = root / "layers"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        layers_dir.mkdir(parents=True)
        trees = [stdlib_tree(quick), large_files_tree(1, (16 if quick else 64) * MIB, seed=5)]
        tars = [subprocess.run(["tar", "-C", str(t), "--sort=name", "--mtime=@1600000000",
                                "-cf", "-", "."], check=True, capture_output=True).stdout
                for t in trees]
        app = subprocess.run(["tar", "-C", str(trees[1]), "--sort=name", "-cf", "-",
                              "--transform", "s,^,app2/,", "."],
                             check=True, capture_output=True).stdout
        write_image(root / "layout", "a", tars)
        write_image(root / "layout", "b", [tars[0], app])
        for i, tar in enumerate(tars):
            (layers_dir / f"{i}.tar.gz").write_bytes(gzip.compress(tar, 6, mtime=0))
        (root / "bytes").write_text(str(sum(len(t) for t in tars)))
        (root / "done").touch()
    return root / "layout", sorted(layers_dir.iterdir()), int((root / "bytes").read_text())


def _erofsd(layout: Path, tag: str, work: Path, state: Path, *options: str) -> Sample:
    return run_timed([sys.executable, "-m", "erofsd", "convert", f"oci:{layout}:{tag}",
                      f"oci:{work / 'out'}:{tag}", "--state-dir", str(state), "--quiet",
                      *options])


def _two_step(layers: list[Path], work: Path) -> Sample:
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    total = Sample(0, 0)
    for layer in layers:
        s = run_timed(["tar", "-C", str(tree), "-xzpf", str(layer)])
        total = Sample(total.wall + s.wall, total.cpu + s.cpu)
    s = run_timed(["mkfs.erofs", "--quiet", "--chunksize=1048576", f"--blobdev={work / 'blob'}",
                   str(work / "boot"), str(tree)])
    for name in ("boot", "blob"):
        (work / name).unlink()
    return Sample(total.wall + s.wall, total.cpu + s.cpu)


def run(quick: bool) -> list[Figure]:
    runs = 3 if quick else 5
    layout, layers, size = _images(quick)
    mib = size / MIB
    figures = []
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-convert-") as tmp:
        work = Path(tmp)

        def ours(*options: str) -> Sample:
            shutil.rmtree(work / "out", ignore_errors=True)
            shutil.rmtree(work / "state", ignore_errors=True)
            return _erofsd(layout, "a", work, work / "state", *options)

        a, b, plain = alternate(runs, ours, lambda: _two_step(layers, work),
                                lambda: ours("--compression", "none"))
        params = {"bytes": size, "layers": len(layers), "runs": runs}
        figures.append(Figure("B1", "convert throughput (uncompressed layers)", "MiB/s",
                              mib / median(a), "GNU tar + mkfs.erofs", mib / median(b), params,
                              goal=">= 1.0"))
        figures.append(Figure("B1", "convert throughput, zstd blobs", "MiB/s", mib / median(a),
                              "erofsd, uncompressed blobs", mib / median(plain), params))
        shutil.rmtree(work / "out", ignore_errors=True)
        shutil.rmtree(work / "state", ignore_errors=True)
        ours_peak = _peak_mib([sys.executable, "-m", "erofsd", "convert", f"oci:{layout}:a",
                               f"oci:{work / 'out'}:a", "--state-dir", str(work / "state"),
                               "--quiet"])
        peak_tree = work / "peak-tree"
        peak_tree.mkdir()
        peer_peak = max([_peak_mib(["tar", "-C", str(peak_tree), "-xzpf", str(layer)])
                         for layer in layers]
                        + [_peak_mib(["mkfs.erofs", "--quiet", "--chunksize=1048576",
                                      f"--blobdev={work / 'peak-blob'}",
                                      str(work / "peak-boot"), str(peak_tree)])])
        figures.append(Figure("B1", "convert peak memory", "MiB", ours_peak,
                              "GNU tar + mkfs.erofs", peer_peak, params,
                              higher_is_better=False, goal="bounded"))
        # the second image shares the base: converting it after the first skips the base
        cold = []
        warm = []
        for _ in range(runs):
            shutil.rmtree(work / "out", ignore_errors=True)
            shutil.rmtree(work / "state", ignore_errors=True)
            cold.append(_erofsd(layout, "b", work, work / "state"))
            shutil.rmtree(work / "out", ignore_errors=True)
            shutil.rmtree(work / "state", ignore_errors=True)
            _erofsd(layout, "a", work, work / "state")
            warm.append(_erofsd(layout, "b", work, work / "state"))
        figures.append(Figure("B1", "convert an image sharing a converted base", "s",
                              median(warm), "the same image converted cold", median(cold),
                              {"runs": runs}, higher_is_better=False))
    return figures

