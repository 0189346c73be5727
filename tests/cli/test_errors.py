"""The CLI's one boundary (cli/__init__.py): a mistake is one line and exit 1, usage exit 2."""

from __future__ import annotations

import os

from clikit import erofsd, ok, one_line_error


def test_user_mistakes_give_one_line(built, tmp_path):
    src, out = built
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(8192))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        (["ls", f"oci:{tmp_path}/missing"], ["no such image layout"]),
        (["ls", f"oci:{out}:nope"], ["no tag 'nope'", "v1"]),
        (["ls", f"oci:{out}:bad tag!"], ["invalid tag"]),
        (["cat", f"oci:{out}:v1", "/no/such"], ["no such file"]),
        (["cat", f"oci:{out}:v1", "/devs"], ["directory"]),
        (["cat", f"oci:{out}:v1", "/small/x"], ["not a directory"]),
        (["ls", garbage], ["not an EROFS image"]),
        (["ls", tmp_path / "nothing"], ["not found"]),
        (["ls", tmp_path], ["is a directory"]),
        (["ls", f"oci:{out}:v1", "--device", garbage], ["--device is for raw"]),
        (["build", src, tmp_path / "x", "--chunk-size", "3000"], ["power of two"]),
        (["build", src, tmp_path / "x", "--chunk-size", "lots"], ["not a size"]),
        (["build", src, tmp_path / "x", "--compression", "gzip"], ["unknown compression"]),
        (["build", src, tmp_path / "x", "--compression", "zstd:99"], ["from 1 to 22"]),
        (["build", src, tmp_path / "x", "--frame-size", "lots"], ["not a size"]),
        (["export", f"oci:{out}:v1", tmp_path / "full"], ["not empty"]),
        (["export", garbage, tmp_path / "z"], ["not an EROFS image"]),
        (["build", src, tmp_path / "full"], ["not an OCI image layout"]),
        (["build", tmp_path / "nothing", tmp_path / "y"], ["No such file"]),
        (["extract", f"oci:{out}:v1", tmp_path / "full"], ["not an empty directory"]),
        (["inspect", "docker-ish:thing"], ["not found"]),
    ]
    for args, fragments in cases:
        one_line_error(erofsd(*args), *fragments)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert not (tmp_path / "z").exists()


def test_usage_errors_exit_2():
    result = erofsd("build", "/only-one")
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    for command in ("build", "inspect", "ls", "cat", "extract", "check"):
        assert b"Usage:" in ok(command, "--help")
