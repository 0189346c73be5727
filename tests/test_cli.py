"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import requires_tool
from trees import edge_tree, random_tree
from treeutil import assert_same_tree, snapshot_dir


def erofsd(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "erofsd", *map(str, args)],
                          capture_output=True, input=input, timeout=300)


def ok(*args: str) -> bytes:
    result = erofsd(*args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cli")
    src = edge_tree(base / "src")
    out = base / "layout"
    ok("build", src, out, "--tag", "v1", "--chunk-size", "64K", "--quiet")
    return src, out


def test_build_is_quiet_under_quiet_and_reports_otherwise(tmp_path):
    src = random_tree(tmp_path / "src", 60, entries=20)
    assert ok("build", src, tmp_path / "a", "--quiet") == b""
    assert b"built oci:" in ok("build", src, f"oci:{tmp_path / 'b'}:t")
    assert sorted(ok("ls", f"oci:{tmp_path / 'b'}:t").decode().splitlines()) == \
        sorted(os.listdir(src))


def test_inspect_json(built):
    _, out = built
    info = json.loads(ok("inspect", f"oci:{out}:v1", "--json"))
    assert info["superblock"]["block_size"] == 4096
    assert len(info["devices"]) == 1 and info["devices"][0]["tag"] == info["blobs"][0]["digest"][7:]
    assert info["counts"]["files"] > 20 and info["counts"]["symlinks"] == 4
    text = ok("inspect", f"oci:{out}:v1").decode()
    assert info["manifest"] in text and "blob devices" in text


def test_ls_and_cat(built):
    src, out = built
    names = ok("ls", f"oci:{out}:v1").decode().splitlines()
    assert sorted(names) == sorted(os.listdir(src))
    long = ok("ls", "-l", f"oci:{out}:v1", "/").decode().splitlines()
    assert any(line.startswith("lrwxrwxrwx") and line.endswith(" link -> small")
               for line in long)
    assert ok("ls", "-l", f"oci:{out}:v1", "/modes/suid").decode().startswith("-rwsr-xr-x")
    null = ok("ls", "-l", f"oci:{out}:v1", "/devs/null").decode()
    assert null.startswith(stat.filemode(os.lstat(src / "devs" / "null").st_mode))
    assert " 1, 3 " in null
    assert ok("cat", f"oci:{out}:v1", "/three_chunks") == (src / "three_chunks").read_bytes()
    assert ok("cat", f"oci:{out}:v1", "sparse") == (src / "sparse").read_bytes()


def test_extract_round_trip(built, tmp_path):
    src, out = built
    dest = tmp_path / "dest"
    ok("extract", f"oci:{out}:v1", dest, "--quiet")
    assert_same_tree(snapshot_dir(dest), snapshot_dir(src))
    assert os.stat(dest / "sparse").st_blocks * 512 < 1 << 20  # holes stayed holes


def test_check_passes_then_catches_a_flipped_byte(built, tmp_path):
    src, out = built
    assert b"ok:" in ok("check", f"oci:{out}:v1")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", out, copy], check=True)
    info = json.loads(ok("inspect", f"oci:{copy}:v1", "--json"))
    blob = copy / "blobs" / "sha256" / info["blobs"][0]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[5000] ^= 1
    blob.write_bytes(bytes(data))
    result = erofsd("check", f"oci:{copy}:v1")
    assert result.returncode == 1
    assert b"does not match its digest" in result.stderr and b"FAILED" in result.stdout
    report = json.loads(erofsd("check", f"oci:{copy}:v1", "--json").stdout)
    assert report["ok"] is False and len(report["problems"]) == 1


@requires_tool("mkfs.erofs")
def test_raw_bootstrap_with_devices(tmp_path):
    src = random_tree(tmp_path / "src", 61, entries=40)
    blob = tmp_path / "blob"
    subprocess.run(["mkfs.erofs", "--quiet", "--chunksize=4096", f"--blobdev={blob}",
                    tmp_path / "img", src], check=True)
    assert sorted(ok("ls", tmp_path / "img", "--device", blob).decode().splitlines()) == \
        sorted(os.listdir(src))
    ok("extract", tmp_path / "img", tmp_path / "dest", "--device", blob, "--quiet")
    assert_same_tree(snapshot_dir(tmp_path / "dest"), snapshot_dir(src))
    assert b"all file data read" in ok("check", tmp_path / "img", "--device", blob)


def _one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("erofsd: error:", "Usage:", "Error:")) \
        or lines[-1].startswith("Error:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err


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
        (["build", src, tmp_path / "full"], ["not an OCI image layout"]),
        (["build", tmp_path / "nothing", tmp_path / "y"], ["No such file"]),
        (["extract", f"oci:{out}:v1", tmp_path / "full"], ["not an empty directory"]),
        (["inspect", "docker-ish:thing"], ["not found"]),
    ]
    for args, fragments in cases:
        _one_line_error(erofsd(*args), *fragments)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_usage_errors_exit_2():
    result = erofsd("build", "/only-one")
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    for command in ("build", "inspect", "ls", "cat", "extract", "check"):
        assert b"Usage:" in ok(command, "--help")
