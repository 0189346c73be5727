"""Blob files of local layouts, kept open for every source of the process, and bounded."""

from __future__ import annotations

import os

import pytest

from erofsd.oci.source import OpenFiles


def open_fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


def test_files_are_kept_open_up_to_the_bound_and_reused(tmp_path):
    paths = []
    for n in range(5):
        paths.append(str(tmp_path / f"f{n}"))
        (tmp_path / f"f{n}").write_bytes(b"%d" % n)
    files = OpenFiles(keep=2)
    for path in paths:
        with files.opened(path) as fd:
            assert os.pread(fd, 1, 0) == path[-1].encode()
    assert {p for p in paths if p in open_fds()} == set(paths[-2:])  # the last two
    with files.opened(paths[-1]) as first, files.opened(paths[-1]) as again:
        assert first == again


def test_a_file_pushed_out_while_read_stays_open_until_the_read_is_done(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a" * 10)
    b.write_bytes(b"b" * 10)
    files = OpenFiles(keep=1)
    with files.opened(str(a)) as fd:
        with files.opened(str(b)):  # pushes a out of the bound
            pass
        assert str(a) in open_fds()
        assert os.pread(fd, 10, 0) == b"a" * 10  # still a's fd, not a reused number
    assert str(a) not in open_fds() and str(b) in open_fds()


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError), OpenFiles(keep=2).opened(str(tmp_path / "gone")):
        pass
