"""Run the benchmark suite: `python -m bench [--quick] [--json FILE] [--only B1,...]`."""

from __future__ import annotations

import argparse
import platform
import sys
import time

from . import (
    b1_build,
    b2_warm,
    b3_lazy_start,
    b4_sharing,
    b5_latency,
    b6_memory,
    b7_fscache,
    b8_container_start,
    b9_chunk_sharing,
    b10_transfer,
    b11_unconverted,
    convert,
    lazy_reads,
)
from .common import print_table, write_json

SUITE = {"B1": lambda quick: b1_build.run(quick) + convert.run(quick), "B2": b2_warm.run,
         "B3": lambda quick: b3_lazy_start.run(quick) + lazy_reads.run(quick),
         "B4": b4_sharing.run, "B5": b5_latency.run, "B6": b6_memory.run,
         "B7": b7_fscache.run, "B8": b8_container_start.run, "B9": b9_chunk_sharing.run,
         "B10": b10_transfer.run,
         "B11": b11_unconverted.run}


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced sizes, 3 runs each")
    parser.add_argument("--json", metavar="FILE", help="one JSON object per line and figure")
    parser.add_argument("--only", default="", help="comma-separated figure ids")
    args = parser.parse_args()
    wanted = [x.strip() for x in args.only.split(",") if x.strip()] or list(SUITE)
    figures = []
    started = time.time()
    for figure_id in wanted:
        began = time.time()
        figures += SUITE[figure_id](args.quick)
        print(f"{figure_id} took {time.time() - began:.0f}s", file=sys.stderr, flush=True)
    print(f"\nerofsd benchmarks, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
          f"{platform.machine()}, {platform.release()}, "
          f"{'quick' if args.quick else 'full'}, {time.time() - started:.0f}s\n")
    print_table(figures)
    if args.json:
        write_json(figures, args.json)


if __name__ == "__main__":
    main()
