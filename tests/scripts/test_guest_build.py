"""scripts/guest/build.sh: a build interrupted leaves nothing; one killed is cleared next time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import guest

pytestmark = pytest.mark.skipif(guest.unavailable() is not None,
                                reason=guest.unavailable() or "")


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "EROFSD_GUEST_CACHE": str(cache)}


def _processes_using(path: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_terminated_build_stops_at_once_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    build = subprocess.Popen([str(guest.BUILD)], env=_env(cache), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any(cache.glob(".build-*/linux-source-6.1")):  # the sources are unpacking
            assert build.poll() is None and time.monotonic() < deadline, build.stderr.read()
            time.sleep(0.05)
        build.send_signal(signal.SIGTERM)
        assert build.wait(timeout=30) == 143
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
    assert sorted(p.name for p in cache.iterdir()) == [".lock"]  # no work folder, no kernel
    assert _processes_using(cache) == []  # tar (or make) was stopped with it


def test_what_a_killed_build_left_is_removed_by_the_next_run(tmp_path):
    kernel, initramfs = map(Path, guest.images())  # `make guest` built them
    cache = tmp_path / "cache"
    (cache / kernel.parent.name).mkdir(parents=True)  # kernel-<key>/bzImage
    shutil.copy(kernel, cache / kernel.parent.name / kernel.name)
    shutil.copy(initramfs, cache / initramfs.name)
    stale = cache / ".build-killed"
    (stale / "linux-source-6.1").mkdir(parents=True)
    (stale / "linux-source-6.1" / "Makefile").write_bytes(b"x" * 100_000)
    result = subprocess.run([str(guest.BUILD)], env=_env(cache), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(cache / kernel.parent.name / "bzImage"),
                                     str(cache / initramfs.name)]
    assert not stale.exists()


def test_cached_only_never_builds(tmp_path):
    cache = tmp_path / "empty"
    result = subprocess.run([str(guest.BUILD), "--cached"], env=_env(cache),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3 and "make guest" in result.stderr
    assert not cache.exists()
