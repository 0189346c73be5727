"""erofsd build as a user meets it: progress, summary, compression."""

from __future__ import annotations

import json
import os

from clikit import ok
from trees import random_tree


def test_build_is_quiet_under_quiet_and_reports_otherwise(tmp_path):
    src = random_tree(tmp_path / "src", 60, entries=20)
    assert ok("build", src, tmp_path / "a", "--quiet") == b""
    assert b"built oci:" in ok("build", src, f"oci:{tmp_path / 'b'}:t")
    assert sorted(ok("ls", f"oci:{tmp_path / 'b'}:t").decode().splitlines()) == \
        sorted(os.listdir(src))


def test_compression_is_the_default_and_can_be_chosen(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"t{i}").write_bytes(b"%d words that repeat and repeat\n" % i * (i * 300 + 1))
    blobs = {}
    for name, args in (("default", ()), ("fast", ("--compression", "zstd:1", "--frame-size",
                                                  "0")), ("none", ("--compression", "none"))):
        ok("build", src, tmp_path / name, "--quiet", *args)
        (blobs[name],) = json.loads(ok("inspect", f"oci:{tmp_path / name}", "--json"))["blobs"]
        assert ok("cat", f"oci:{tmp_path / name}", "/t29") == (src / "t29").read_bytes()
    assert blobs["default"]["data_size"] == blobs["none"]["data_size"] == \
        blobs["fast"]["data_size"]
    assert blobs["none"]["compression"] == "none" and blobs["none"]["size"] > \
        blobs["none"]["data_size"]  # the data, then the table
    assert blobs["default"]["compression"] == "zstd"
    assert blobs["default"]["size"] < blobs["none"]["data_size"] // 10
    assert blobs["default"]["frames"] < blobs["default"]["chunks"] == 30  # small files packed
    assert blobs["fast"]["frames"] == blobs["fast"]["chunks"]
    text = ok("inspect", f"oci:{tmp_path / 'default'}").decode()
    assert "zstd, 30 chunks in" in text
