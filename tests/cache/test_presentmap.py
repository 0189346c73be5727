"""The present-map file of a cached blob."""

from __future__ import annotations

import os
import subprocess
import sys

from erofsd.cache.presentmap import HEADER, HEADER_SIZE, PresentMap


def test_present_map_header_is_one_block():
    assert HEADER.size <= HEADER_SIZE == 4096


HOLDS = """
import fcntl, os, sys
from erofsd.cache.presentmap import FLOCK, HEADER_SIZE
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, HEADER_SIZE, 4, 0))
    print("free")
except BlockingIOError:
    print("held")
"""


def test_a_range_stays_locked_when_the_process_closes_another_fd_of_the_map(tmp_path):
    """lockf's locks all went when the process closed any fd of the file (a listing, GC,
    the chunk index reading a map): another process could then fetch the same chunks."""
    path = str(tmp_path / "blob.map")
    PresentMap.create(path, 8, 8 * 4096, 8 * 4096)
    pmap = PresentMap.from_fd(path, os.open(path, os.O_RDWR))

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", HOLDS, path], capture_output=True,
                              text=True, check=True).stdout.strip()

    with pmap.locked(0, 4):
        PresentMap.read_only(path).close()  # another fd of the same file, closed
        assert other_process() == "held"
    assert other_process() == "free"
    pmap.close()
