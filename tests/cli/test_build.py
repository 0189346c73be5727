"""erofsd build as a user meets it."""

from __future__ import annotations

import os

from clikit import ok
from trees import random_tree


def test_build_is_quiet_under_quiet_and_reports_otherwise(tmp_path):
    src = random_tree(tmp_path / "src", 60, entries=20)
    assert ok("build", src, tmp_path / "a", "--quiet") == b""
    assert b"built oci:" in ok("build", src, f"oci:{tmp_path / 'b'}:t")
    assert sorted(ok("ls", f"oci:{tmp_path / 'b'}:t").decode().splitlines()) == \
        sorted(os.listdir(src))
