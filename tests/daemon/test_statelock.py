"""One daemon per state directory (daemon/statelock.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from erofsd.daemon.statelock import StateLock
from erofsd.errors import Busy


def test_a_second_taker_is_told_who_has_it(tmp_path):
    first = StateLock(tmp_path)
    assert first.holder() is None
    first.acquire("/run/a.sock")
    assert StateLock(tmp_path).holder() == {"pid": os.getpid(), "socket": "/run/a.sock"}
    with pytest.raises(Busy, match=f"another erofsd daemon \\(pid {os.getpid()}, socket "
                                   "/run/a.sock\\) serves the state directory"):
        StateLock(tmp_path).acquire("/run/b.sock")


def test_the_lock_goes_with_its_process(tmp_path):
    code = ("import sys, time\nfrom erofsd.daemon.statelock import StateLock\n"
            f"StateLock({str(tmp_path)!r}).acquire('/run/c.sock')\n"
            "print('locked', flush=True)\nsys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "locked\n"
        assert StateLock(tmp_path).holder() == {"pid": child.pid, "socket": "/run/c.sock"}
    finally:
        child.stdin.close()
        child.wait(timeout=20)
    assert StateLock(tmp_path).holder() is None
    StateLock(tmp_path).acquire("/run/d.sock")  # free again
