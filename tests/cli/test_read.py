"""The read commands (cli/read.py): inspect, ls, cat, extract, export, check, raw images."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from builds import kernel_mounted
from clikit import erofsd, ok
from skips import requires_kernel, requires_tool
from trees import random_tree
from treeutil import assert_same_tree, snapshot_dir


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
    frames = json.loads(ok("inspect", f"oci:{out}:v1", "--json"))["blobs"][0]["frames"]
    assert f"verified from {frames} stored frames".encode() in ok("check", f"oci:{out}:v1")
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


@requires_kernel
@requires_tool("fsck.erofs")
def test_export_gives_the_kernel_and_fsck_what_they_mount(built, tmp_path):
    src, out = built
    paths = json.loads(ok("export", f"oci:{out}:v1", tmp_path / "files", "--json"))
    blob = json.loads(ok("inspect", f"oci:{out}:v1", "--json"))["blobs"][0]
    assert blob["compression"] == "zstd"
    assert os.path.getsize(paths["devices"][0]) == blob["data_size"]  # uncompressed
    fsck = subprocess.run(["fsck.erofs", *[f"--device={d}" for d in paths["devices"]],
                           paths["bootstrap"]], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    with kernel_mounted(paths["bootstrap"], paths["devices"]) as mnt:
        assert_same_tree(snapshot_dir(mnt), snapshot_dir(src))
    text = ok("export", f"oci:{out}:v1", tmp_path / "again").decode()
    assert "mount -t erofs -o ro,device=$(losetup -f --show -r" in text
