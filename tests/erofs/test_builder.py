"""Builder properties: reproducible blobs, deduplication, holes, layout, and clean failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from builds import build_layers
from erofsd.erofs.builder import Layer, check_chunk_size
from erofsd.erofs.dirlayer import read_dir_layer
from erofsd.errors import BuildError, InvalidArgument, SourceChanged
from erofsd.images import open_image
from erofsd.oci.image import build_to_layout, load_chunk_table
from erofsd.oci.layout import OciLayout
from erofsd.oci.mediatypes import EROFSD_BLOB, EROFSD_BOOTSTRAP, SNAPSHOT_LAYER
from erofsd.oci.reference import LayoutRef
from skips import requires_tool
from trees import random_tree

MIB = 1 << 20


def manifest_of(out: Path, tag: str = "latest"):
    with open_image(f"oci:{out}:{tag}") as opened:
        return opened.manifest


def test_same_layer_same_blob_whatever_the_inodes_and_times(tmp_path):
    base = random_tree(tmp_path / "base", 21, entries=150)
    copy = tmp_path / "copy"
    shutil.copytree(base, copy, symlinks=True)  # new inode numbers, new times
    for path in copy.rglob("*"):
        os.utime(path, (1, 1), follow_symlinks=False)
    app1 = random_tree(tmp_path / "app1", 22, entries=30)
    app2 = random_tree(tmp_path / "app2", 23, entries=30)
    build_layers([base, app1], tmp_path / "out", tag="a")
    build_layers([copy, app2], tmp_path / "out", tag="b")
    a, b = manifest_of(tmp_path / "out", "a"), manifest_of(tmp_path / "out", "b")
    assert a.blobs[0].digest == b.blobs[0].digest  # the shared base
    assert a.blobs[0].table_digest == b.blobs[0].table_digest
    assert a.blobs[1].digest != b.blobs[1].digest
    assert a.bootstrap.digest != b.bootstrap.digest
    # and building again gives the very same manifest
    build_layers([base, app1], tmp_path / "out2")
    assert manifest_of(tmp_path / "out2").digest == a.digest


def test_identical_chunks_stored_once_and_zero_chunks_are_holes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(2 * MIB)
    (src / "a").write_bytes(data)
    (src / "b").write_bytes(data)  # a copy, not a hard link
    (src / "c").write_bytes(data[:MIB] * 2)  # both chunks equal a's first chunk
    (src / "zeros").write_bytes(bytes(3 * MIB))
    build_layers([src], tmp_path / "out")
    with open_image(f"oci:{tmp_path / 'out'}") as opened:
        blob = opened.manifest.blobs[0]
        assert blob.data_size == 2 * MIB  # a's two chunks; everything else shared or a hole
        table = load_chunk_table(opened.blobs[0], blob)
        assert [e.length for e in table.entries] == [MIB, MIB]
        img = opened.image
        zeros = img.lookup("/zeros")
        assert all(img.map(zeros, off).is_hole for off in range(0, 3 * MIB, MIB))
        assert img.read(img.lookup("/c"), 0, 2 * MIB) == data[:MIB] * 2


def test_manifest_device_table_and_chunk_tables_agree(tmp_path):
    layers = [random_tree(tmp_path / f"l{i}", 30 + i, entries=40) for i in range(3)]
    build_layers(layers, tmp_path / "out", chunk_size=64 * 1024)
    layout = OciLayout.open(tmp_path / "out")
    raw = json.loads(layout.read_blob(layout.resolve("latest").digest))
    types = [layer["mediaType"] for layer in raw["layers"]]
    assert types == [EROFSD_BLOB] * 3 + [EROFSD_BOOTSTRAP]  # the bootstrap last, as nydus'
    assert all(t.startswith("application/vnd.oci.image.layer.") for t in types)  # containerd
    assert [layer["annotations"][SNAPSHOT_LAYER] for layer in raw["layers"]] == \
        ["blob"] * 3 + ["bootstrap"]
    config = json.loads(layout.read_blob(raw["config"]["digest"]))
    assert config["erofsd"]["chunk_size"] == 64 * 1024
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in raw["layers"]]
    with open_image(f"oci:{tmp_path / 'out'}") as opened:
        slots = opened.image.slots
        assert [s.tag_text for s in slots] == [b.digest[7:] for b in opened.manifest.blobs]
        for slot, blob, stored in zip(slots, opened.manifest.blobs, opened.stored, strict=True):
            assert slot.blocks * 4096 == blob.data_size
            table = load_chunk_table(stored, blob)
            assert table.data_size == blob.data_size and table.stored_size == blob.table_offset
            assert blob.compressed and table.compressed  # the default


def test_several_tags_in_one_layout(tmp_path):
    a = random_tree(tmp_path / "a", 40, entries=20)
    b = random_tree(tmp_path / "b", 41, entries=20)
    build_layers([a], tmp_path / "out", tag="one")
    build_layers([b], tmp_path / "out", tag="two")
    build_layers([b], tmp_path / "out", tag="one")  # re-tag replaces, never duplicates
    tags = OciLayout.open(tmp_path / "out").tags()
    assert sorted(tags) == ["one", "two"]
    assert tags["one"].digest == tags["two"].digest


@requires_tool("skopeo")
def test_skopeo_reads_our_layout(tmp_path):
    src = random_tree(tmp_path / "src", 42, entries=20)
    desc = build_layers([src], tmp_path / "out", tag="v1")
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'out'}:v1"],
                         capture_output=True, check=True).stdout
    assert raw == OciLayout.open(tmp_path / "out").read_blob(desc.digest)


@pytest.mark.parametrize("size", [0, 1000, 4095, 6000, 1 << 31, 3 * MIB])
def test_bad_chunk_sizes(size):
    with pytest.raises(InvalidArgument):
        check_chunk_size(size)


def _layers(*dirs: Path) -> list[Layer]:
    return [Layer(*read_dir_layer(d), str(d)) for d in dirs]


def test_file_changed_after_walk_fails_and_leaves_nothing(tmp_path):
    src = random_tree(tmp_path / "src", 50, entries=30)
    victim = next(p for p in sorted(src.rglob("*")) if p.is_file() and not p.is_symlink()
                  and p.stat().st_size > 0)
    layers = _layers(src)
    with open(victim, "ab") as f:
        f.write(b"appended")
    with pytest.raises(SourceChanged, match=victim.name):
        build_to_layout(layers, LayoutRef(str(tmp_path / "new")), chunk_size=MIB)
    assert not (tmp_path / "new").exists()


def test_failure_in_existing_layout_keeps_it_as_it_was(tmp_path):
    good = random_tree(tmp_path / "good", 51, entries=30)
    build_layers([good], tmp_path / "out", tag="keep")
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    src = random_tree(tmp_path / "src", 52, entries=30)
    victim = next(p for p in sorted(src.rglob("*"), reverse=True)
                  if p.is_file() and not p.is_symlink() and p.stat().st_size > 0)
    layers = _layers(good, src)
    time.sleep(0.01)
    victim.write_bytes(b"different now")
    with pytest.raises(SourceChanged):
        build_to_layout(layers, LayoutRef(str(tmp_path / "out"), "new"), chunk_size=MIB)
    after = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before  # no temp files, no orphan blobs, index unchanged


@pytest.fixture
def public_tmp():
    """A directory an unprivileged user can reach (pytest's own tmp root is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="erofsd-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_unreadable_file_names_its_path(public_tmp):
    """As an unprivileged user (a forked child), an unreadable file is a clear error."""
    src = public_tmp / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "secret").write_bytes(b"no")
    (src / "dir" / "secret").chmod(0o000)
    out = public_tmp / "out"
    out.mkdir()
    os.chown(out, 65534, 65534)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, try the build, report the outcome
        os.close(read_end)
        message = "no error"
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            build_to_layout(_layers(src), LayoutRef(str(out / "img")), chunk_size=MIB)
        except BuildError as e:
            message = f"{type(e).__name__}|{e.errno}|{e}"
        except BaseException as e:  # anything else is a bug
            message = f"unexpected {type(e).__name__}: {e}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        message = f.read()
    os.waitpid(pid, 0)
    kind, err, text = message.split("|", 2)
    assert (kind, int(err)) == ("BuildError", 13)  # EACCES
    assert "dir/secret" in text and "Permission denied" in text
    assert not (out / "img").exists()
