"""erofsd convert: ordinary images in, erofsd images out, checked against umoci and the kernel."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from builds import kernel_files, kernel_mounted
from erofsd.errors import BuildError, IntegrityError
from erofsd.images import open_image
from erofsd.oci.convert import SOURCE_LAYER, BlobSettings, convert
from erofsd.oci.layout import OciLayout
from imagekit import (
    TarBuilder,
    gnu_tar,
    sparse_tree,
    umoci_image,
    umoci_unpack,
    write_image,
)
from skips import requires_kernel, requires_tool
from treeutil import assert_same_tree, snapshot_dir, snapshot_image

pytestmark = requires_tool("umoci")


def three_way(source: str | Path, converted: str, tmp: Path, *, ignore_paths=(),
              ignore=()) -> dict:
    """The reference tree == our reader's == the kernel mount's; returns ours.

    ``source`` is an image umoci unpacks (OCI, gzip layers: umoci 0.4 reads
    neither zstd nor Docker manifests) with the same layers as the converted
    one, or a directory some other tool (GNU tar) unpacked.
    """
    tree = source if isinstance(source, Path) else umoci_unpack(source, tmp / "bundle")
    expected = snapshot_dir(tree)
    for path in ignore_paths:
        expected.pop(path, None)

    def clean(snap):
        return {p: e for p, e in snap.items() if p not in ignore_paths}

    with open_image(converted) as opened:
        ours = snapshot_image(opened.image)
    assert_same_tree(clean(ours), expected, ignore=ignore)
    bootstrap, devices = kernel_files(converted, tmp / "kernel-files")
    with kernel_mounted(bootstrap, devices) as mnt:
        assert_same_tree(clean(snapshot_dir(mnt)), expected, ignore=ignore)
    return ours


BINARY = b"\x01\x00\x00\x02\x00\x20\x00\xff\x00\x00"  # not UTF-8: travels surrogate-escaped


def feature_layers() -> list[bytes]:
    pax = TarBuilder(tarfile.PAX_FORMAT)
    pax.dir("etc", uid=0, gid=0)
    pax.file("etc/conf", b"first version\n")
    pax.file("d/" + "n" * 120 + "/long-named-file", b"long name (PAX)\n")
    pax.symlink("long-link", "t" * 300)
    pax.file("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o4755, uid=1000, gid=1001,
             uname="user", gname="grp")
    pax.hardlink("bin/tool2", "bin/tool")
    pax.device("dev/null", tarfile.CHRTYPE, 1, 3, 0o666)
    pax.device("dev/sda", tarfile.BLKTYPE, 8, 0)
    pax.device("dev/big", tarfile.CHRTYPE, 259, 300000)
    pax.fifo("run/fifo")
    pax.file("x/attrs", b"xattrs\n", pax_headers={
        "SCHILY.xattr.user.plain": "value",
        "SCHILY.xattr.trusted.binary": BINARY.decode("utf-8", "surrogateescape"),
        "LIBARCHIVE.xattr.user.lib": base64.b64encode(b"libarchive value").decode()})
    pax.file("x/nanos", b"ns\n", pax_headers={"mtime": "1600000000.123456789"})
    pax.file("etc/conf", b"second version wins\n", mode=0o600)  # repeated entry
    pax.file("implicit/deep/file", b"no directory entries above me\n")
    gnu = TarBuilder(tarfile.GNU_FORMAT)
    gnu.file("gnu/" + "g" * 150, b"long name (GNU)\n")
    gnu.symlink("gnu/long-link", "u" * 200)
    gnu.hardlink("bin/tool3", "bin/tool")  # a hard link to a file of the layer below
    gnu.file(".wh.run", b"")  # whiteout
    gnu.file("d/.wh..wh..opq", b"")  # opaque: the long-named dir below goes
    gnu.file("d/new", b"new in layer 2\n")
    return [pax.bytes(), gnu.bytes()]


@requires_kernel
@pytest.mark.parametrize("compression, docker", [("gzip", False), ("zstd", False),
                                                 ("", False), ("gzip", True)])
def test_every_tar_feature_comes_through(tmp_path, compression, docker):
    layers = feature_layers()
    source = write_image(tmp_path / "src", "t", layers, compression=compression, docker=docker)
    reference = write_image(tmp_path / "ref", "t", layers)
    out = f"oci:{tmp_path / 'out'}:t"
    report = convert(source, out, state_dir=tmp_path / "state")
    assert (report.layers, report.converted) == (2, 2)
    # directories no entry described get umoci's own times; umoci ignores LIBARCHIVE xattrs
    implied = [b"/", b"/bin", b"/dev", b"/gnu", b"/x", b"/d", b"/implicit", b"/implicit/deep"]
    ours = three_way(reference, out, tmp_path, ignore_paths=[*implied, b"/x/attrs"])
    assert ours[b"/x/attrs"].xattrs == ((b"trusted.binary", BINARY),
                                        (b"user.lib", b"libarchive value"),
                                        (b"user.plain", b"value"))
    assert ours[b"/etc/conf"].mode & 0o777 == 0o600  # the repeated entry won
    assert ours[b"/bin/tool"].mode & 0o7777 == 0o4755
    assert ours[b"/bin/tool"].links == (b"/bin/tool", b"/bin/tool2", b"/bin/tool3")
    assert ours[b"/x/nanos"].mtime_ns == 1_600_000_000_123_456_789
    assert b"/run" not in ours and b"/d/new" in ours
    assert not any(b"n" * 120 in p for p in ours)
    assert ours[b"/implicit/deep/file"].size == len(b"no directory entries above me\n")


@requires_kernel
@pytest.mark.parametrize("args", [["--sparse", "--format=gnu"],
                                  ["--sparse", "--format=posix", "--sparse-version=0.0"],
                                  ["--sparse", "--format=posix", "--sparse-version=0.1"],
                                  ["--sparse", "--format=posix", "--sparse-version=1.0"]])
def test_gnu_sparse_formats(tmp_path, args):
    tree = sparse_tree(tmp_path / "tree")
    layer = gnu_tar(tree, *args)
    source = write_image(tmp_path / "src", "t", [layer])
    out = f"oci:{tmp_path / 'out'}:t"
    convert(source, out, state_dir=tmp_path / "state")
    unpacked = tmp_path / "gnu-unpacked"  # umoci 0.4 cannot read old-GNU sparse entries
    unpacked.mkdir()
    subprocess.run(["tar", "-C", str(unpacked), "-xpf", "-", "--same-owner"], input=layer,
                   check=True)
    ours = three_way(unpacked, out, tmp_path, ignore_paths=[b"/"])
    assert ours[b"/sparse"].size == 6 << 20
    with open_image(out) as opened:
        assert opened.manifest.blobs[0].data_size <= 2 << 20  # holes stayed holes


def test_a_sparse_file_declaring_2_to_the_62_bytes_is_refused_at_once(tmp_path):
    """A 1.5 KB layer once kept convert busy for hours: its holes were written as zeros."""
    layer = TarBuilder().file("ok", b"fine").sparse("huge", 1 << 62, [(12345, b"data")]).bytes()
    assert len(layer) < 16 * 1024
    source = write_image(tmp_path / "src", "t", [layer], compression="")
    with pytest.raises(BuildError, match=r"entry 'huge': a file of 4611686018427387904 bytes "
                                         r"needs \d+ chunks"):
        convert(source, f"oci:{tmp_path / 'out'}:t", state_dir=tmp_path / "state")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sparse, message", [
    ([(5000, b"b"), (100, b"a")], "corrupt sparse map: region 100\\+1"),   # out of order
    ([(100, b"aaaa"), (102, b"b")], "corrupt sparse map: region 102\\+1"),  # overlapping
    ([(1 << 20, b"x")], "corrupt sparse map: region 1048576\\+1"),     # past the end
])
def test_a_corrupt_sparse_map_is_refused(tmp_path, sparse, message):
    layer = TarBuilder().sparse("s", 1 << 20, sparse).bytes()
    source = write_image(tmp_path / "src", "t", [layer], compression="")
    with pytest.raises(BuildError, match=message):
        convert(source, f"oci:{tmp_path / 'out'}:t", state_dir=tmp_path / "state")


def test_a_huge_sparse_file_costs_its_data_not_its_size(tmp_path):
    """1 TiB with 40 small regions: holes are never read nor written (zeros would take hours)."""
    rng = random.Random(62)
    size = 1 << 40
    chunk = 1 << 20
    offsets = sorted(rng.sample(range(0, size // chunk), 40))
    regions = [(o * chunk + rng.randrange(chunk - 64), rng.randbytes(rng.randrange(1, 64)))
               for o in offsets]
    layer = TarBuilder().sparse("big", size, regions).file("after", b"next entry").bytes()
    source = write_image(tmp_path / "src", "t", [layer], compression="")
    out = f"oci:{tmp_path / 'out'}:t"
    convert(source, out, state_dir=tmp_path / "state")
    with open_image(out) as opened:
        image = opened.image
        big = image.lookup("/big")
        assert big.size == size
        assert opened.manifest.blobs[0].data_size == 40 * chunk + 4096  # + the block of "after"
        for offset, data in regions:
            assert image.read(big, offset - 3, len(data) + 6)[3:-3] == data
        assert image.read(big, regions[0][0] + chunk, 100) == bytes(100)
        assert image.read(image.lookup("/after"), 0, 100) == b"next entry"


@requires_kernel
def test_symlinks_are_0777_whatever_the_tar_header_says(tmp_path):
    layer = TarBuilder().file("target", b"t").symlink("link", "target", mode=0o644).bytes()
    source = write_image(tmp_path / "src", "t", [layer])
    out = f"oci:{tmp_path / 'out'}:t"
    convert(source, out, state_dir=tmp_path / "state")
    with open_image(out) as opened:
        assert opened.image.lookup("/link").mode == stat.S_IFLNK | 0o777
    bootstrap, devices = kernel_files(out, tmp_path / "kernel-files")
    with kernel_mounted(bootstrap, devices) as mnt:
        assert os.lstat(mnt / "link").st_mode == stat.S_IFLNK | 0o777
        assert os.readlink(mnt / "link") == "target"


@requires_kernel
def test_umoci_images_of_real_trees(tmp_path):
    stdlib = Path(sys.modules["json"].__file__).parent.parent
    source = umoci_image(tmp_path / "layout", "real", [stdlib / "email", stdlib / "json"],
                         config={"--config.env": ["A=1", "B=two"],
                                 "--config.cmd": ["python3"],
                                 "--config.entrypoint": ["/bin/sh"],
                                 "--config.workingdir": ["/srv"],
                                 "--config.user": ["1000:1000"],
                                 "--config.label": ["team=storage"]})
    out = f"oci:{tmp_path / 'out'}:real"
    convert(source, out, state_dir=tmp_path / "state")
    three_way(source, out, tmp_path, ignore_paths=[b"/"])
    layout = OciLayout.open(tmp_path / "out")
    manifest = json.loads(layout.read_blob(layout.resolve("real").digest))
    config = json.loads(layout.read_blob(manifest["config"]["digest"]))
    runtime = config["config"]
    assert runtime["Env"][-2:] == ["A=1", "B=two"] and runtime["Cmd"] == ["python3"]
    assert runtime["Entrypoint"] == ["/bin/sh"] and runtime["WorkingDir"] == "/srv"
    assert runtime["User"] == "1000:1000" and runtime["Labels"]["team"] == "storage"
    assert config["history"][-1]["created_by"].startswith("erofsd convert")
    source_layers = json.loads(OciLayout.open(tmp_path / "layout").read_blob(
        OciLayout.open(tmp_path / "layout").resolve("real").digest))["layers"]
    assert [b["annotations"][SOURCE_LAYER] for b in manifest["layers"][:-1]] == \
        [layer["digest"] for layer in source_layers]


def test_shared_layers_convert_once_to_the_same_blob(tmp_path):
    base = TarBuilder().file("base/a", b"a" * 100_000).file("base/b", b"b" * 50_000).bytes()
    app1 = TarBuilder().file("app/one", b"1").bytes()
    app2 = TarBuilder().file("app/two", b"2").bytes()
    a = write_image(tmp_path / "src", "a", [base, app1])
    b = write_image(tmp_path / "src", "b", [base, app2])
    first = convert(a, f"oci:{tmp_path / 'out'}:a", state_dir=tmp_path / "state")
    second = convert(b, f"oci:{tmp_path / 'out'}:b", state_dir=tmp_path / "state")
    assert (first.converted, first.reused) == (2, 0)
    assert (second.converted, second.reused) == (1, 1)  # the base was not read again
    with open_image(f"oci:{tmp_path / 'out'}:a") as ia, \
            open_image(f"oci:{tmp_path / 'out'}:b") as ib:
        assert ia.manifest.blobs[0].digest == ib.manifest.blobs[0].digest
        assert sorted(p for p, _ in ib.image.walk()) == [b"/", b"/app", b"/app/two", b"/base",
                                                       b"/base/a", b"/base/b"]
    # elsewhere (a fresh destination) the blob must be written, so it is converted again
    third = convert(b, f"oci:{tmp_path / 'elsewhere'}:b", state_dir=tmp_path / "state")
    assert (third.converted, third.reused) == (2, 0)


HOSTILE = {
    "dotdot": (lambda: TarBuilder().file("a/../../escape", b"x").bytes(), "'..'"),
    "absolute": (lambda: TarBuilder().file("/etc/passwd", b"x").bytes(), "absolute path"),
    "symlink-climb": (lambda: TarBuilder().symlink("link", "/etc").file("link/passwd", b"x")
                      .bytes(), "climbs through link"),
    "dangling-hardlink": (lambda: TarBuilder().hardlink("h", "missing").bytes(),
                          "does not exist"),
    "truncated-tar": (lambda: TarBuilder().file("big", b"z" * 100_000).bytes()[:60_000],
                      "truncated"),
    "cut-at-boundary": (lambda: TarBuilder().file("f", b"y" * 1024).bytes()[:512 + 1024],
                        "no end-of-archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_refused_and_leave_nothing(tmp_path, case):
    make, message = HOSTILE[case]
    source = write_image(tmp_path / "src", "t", [TarBuilder().file("ok", b"fine").bytes(),
                                                 make()], compression="")
    with pytest.raises(BuildError, match=message) as info:
        convert(source, f"oci:{tmp_path / 'out'}:t", state_dir=tmp_path / "state")
    assert "layer 2/2" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_device_nodes_refused_in_a_rootless_tree(tmp_path):
    layer = TarBuilder().device("dev/null", tarfile.CHRTYPE, 1, 3).bytes()
    source = write_image(tmp_path / "src", "t", [layer])
    with pytest.raises(BuildError, match="rootless"):
        convert(source, f"oci:{tmp_path / 'out'}:t", state_dir=tmp_path / "s",
                settings=BlobSettings(rootless=True))
    convert(source, f"oci:{tmp_path / 'out'}:t", state_dir=tmp_path / "s")  # as data: fine


@pytest.mark.parametrize("damage", ["truncated-gzip", "digest", "diff_id"])
def test_damaged_streams_are_refused(tmp_path, damage):
    tar = TarBuilder().file("data", bytes(range(256)) * 400).bytes()
    if damage == "truncated-gzip":
        import gzip as gz
        blob = gz.compress(tar)[:-40]
        layout = OciLayout.create(tmp_path / "src")
        source = write_image(tmp_path / "src", "t", [tar])
        manifest = json.loads(layout.read_blob(layout.resolve("t").digest))
        digest = layout.put_bytes(blob)
        manifest["layers"][0].update(digest=digest, size=len(blob))
        from erofsd.oci.descriptor import Descriptor, canonical_json
        raw = canonical_json(manifest)
        layout.set_tag("t", Descriptor(manifest["mediaType"], layout.put_bytes(raw), len(raw)))
        expected: type = BuildError
        message = "truncated or corrupt"
    else:
        source = write_image(tmp_path / "src", "t", [tar],
                             tamper_layer=0 if damage == "digest" else None,
                             bad_diff_id=damage == "diff_id")
        expected, message = IntegrityError, "descriptor says" if damage == "digest" else "diff_id"
    with pytest.raises(expected, match=message):
        convert(source, f"oci:{tmp_path / 'out'}:t", state_dir=tmp_path / "state")
    assert not (tmp_path / "out").exists()


def test_cli_convert_and_errors(tmp_path):
    source = write_image(tmp_path / "src", "t", feature_layers())
    run = subprocess.run([sys.executable, "-m", "erofsd", "convert", source,
                          f"oci:{tmp_path / 'out'}:t", "--state-dir", str(tmp_path / "st")],
                         capture_output=True)
    assert run.returncode == 0, run.stderr
    assert b"2 layer(s), 2 converted" in run.stdout
    again = subprocess.run([sys.executable, "-m", "erofsd", "convert", f"oci:{tmp_path / 'out'}:t",
                            f"oci:{tmp_path / 'x'}:t", "--state-dir", str(tmp_path / "st")],
                           capture_output=True)
    assert again.returncode == 1 and b"already an erofsd image" in again.stderr
    assert b"Traceback" not in again.stderr


def test_snapshot_entry_fields_are_comparable():
    from treeutil import Entry
    assert {f.name for f in dataclasses.fields(Entry)} >= {"mode", "uid", "digest", "links"}


@requires_tool("skopeo")
def test_registry_to_registry(registry, tmp_path):
    stdlib = Path(sys.modules["json"].__file__).parent.parent
    source = umoci_image(tmp_path / "layout", "r", [stdlib / "json"])
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", source,
                    f"docker://{registry.host}/plain/json:v1"], check=True, capture_output=True)
    report = convert(f"docker://{registry.host}/plain/json:v1",
                     f"docker://{registry.host}/erofsd/json:v1", insecure=True,
                     state_dir=tmp_path / "state")
    assert report.converted == 1
    from erofsd.images import ReadOptions
    with open_image(f"docker://{registry.host}/erofsd/json:v1",
                    options=ReadOptions(state_dir=str(tmp_path / "cache"), insecure=True)) as o:
        ours = snapshot_image(o.image)
    expected = snapshot_dir(umoci_unpack(source, tmp_path / "bundle"))
    expected.pop(b"/"), ours.pop(b"/")
    assert_same_tree(ours, expected)
    again = convert(f"docker://{registry.host}/plain/json:v1",
                    f"docker://{registry.host}/erofsd/json:v2", insecure=True,
                    state_dir=tmp_path / "state")
    assert (again.converted, again.reused) == (0, 1)  # the registry has the blob already


def test_converted_images_share_their_base_in_a_domain(daemon, tmp_path):
    base = TarBuilder()
    for i in range(40):
        base.file(f"usr/lib/f{i}", bytes([i]) * 30_000)
    base_tar = base.bytes()
    a = write_image(tmp_path / "src", "a", [base_tar, TarBuilder().file("app/a", b"A").bytes()])
    b = write_image(tmp_path / "src", "b", [base_tar, TarBuilder().file("app/b", b"B").bytes()])
    for tag, source in (("a", a), ("b", b)):
        convert(source, f"oci:{tmp_path / 'out'}:{tag}", state_dir=tmp_path / "state")
    for tag in ("a", "b"):
        daemon.client.mount(f"oci:{tmp_path / 'out'}:{tag}", daemon.mountpoint(tag),
                            domain_id="conv")
        snapshot_dir(daemon.mountpoint(tag))  # read every file
    status = daemon.client.status()
    with open_image(f"oci:{tmp_path / 'out'}:a") as opened:
        base_blob = opened.manifest.blobs[0]
    cookie = next(c for c in status["cookies"] if c["blob"] == base_blob.digest)
    assert cookie["refcount"] == 2
    assert cookie["fetched_bytes"] <= base_blob.size  # fetched once for both images


def _one_gzip_layer_image(root: Path, name: str, size: int, piece) -> str:
    """An OCI layout at ``root`` holding one file of ``size`` bytes, ``piece(i)`` its i-th MiB."""
    import gzip as gz

    from erofsd.oci.descriptor import Descriptor, canonical_json
    info = tarfile.TarInfo(name)
    info.size = size
    compressed = root.with_suffix(".gz")
    with gz.open(compressed, "wb", compresslevel=1) as out:
        out.write(info.tobuf(tarfile.PAX_FORMAT))
        for i in range(size >> 20):
            out.write(piece(i))
        out.write(bytes(1024))  # end-of-archive blocks
    layout = OciLayout.create(root)
    blob = compressed.read_bytes()
    layer = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layout.put_bytes(blob),
                       len(blob))
    raw_config = canonical_json({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": []}})
    config = Descriptor("application/vnd.oci.image.config.v1+json", layout.put_bytes(raw_config),
                        len(raw_config))
    manifest = canonical_json({"schemaVersion": 2, "config": config.to_json(),
                               "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "layers": [layer.to_json()]})
    layout.set_tag("big", Descriptor("application/vnd.oci.image.manifest.v1+json",
                                     layout.put_bytes(manifest), len(manifest)))
    return f"oci:{root}:big"


def _convert_peak_kib(src: str, dst: str, state: Path, level: int = 6) -> int:
    # VmHWM, not ru_maxrss: the kernel carries a vforking parent's peak (pytest's) into
    # the child's ru_maxrss across exec, while VmHWM is this process's own peak
    probe = ("from erofsd.erofs.codec import Compression\n"
             "from erofsd.oci.convert import BlobSettings, convert\n"
             f"convert({src!r}, {dst!r}, state_dir={str(state)!r},\n"
             f"        settings=BlobSettings(compression=Compression(level={level})))\n"
             "print(next(line.split()[1] for line in open('/proc/self/status')\n"
             "           if line.startswith('VmHWM:')))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return int(run.stdout.strip().splitlines()[-1])


def test_a_large_layer_converts_in_bounded_memory(tmp_path):
    """1 GiB of tar bytes (zeros: they gzip to ~1 MB) stream through in small pieces."""
    size = 1 << 30
    zeros = bytes(1 << 20)
    src = _one_gzip_layer_image(tmp_path / "src", "zeros", size, lambda i: zeros)
    peak_kib = _convert_peak_kib(src, f"oci:{tmp_path}/out:big", tmp_path / "state")
    print(f"peak RSS converting a 1 GiB layer: {peak_kib // 1024} MiB")
    assert peak_kib < 160 * 1024, f"peak RSS {peak_kib} KiB for a 1 GiB layer"
    with open_image(f"oci:{tmp_path}/out:big") as opened:
        assert opened.image.lookup("/zeros").size == size
        assert opened.manifest.blobs[0].data_size == 0  # all holes


def test_compressing_a_larger_layer_takes_no_more_memory(tmp_path):
    """Frames are coded on every core, a bounded number at a time: 6x the data, same peak.

    Level 12 codes slower than the layer is read, so frames would pile up unbounded."""
    letters = bytes((b"abcdefghijklmnop  \n" * 14)[:256])
    rng = random.Random(3)

    def text(i: int) -> bytes:  # compresses about 1.8:1, no two MiB alike
        return rng.randbytes(1 << 20).translate(letters)

    peaks = {}
    for mib in (16, 96):
        src = _one_gzip_layer_image(tmp_path / f"src{mib}", "text", mib << 20, text)
        peaks[mib] = _convert_peak_kib(src, f"oci:{tmp_path}/out{mib}:big",
                                       tmp_path / f"state{mib}", level=12)
        with open_image(f"oci:{tmp_path}/out{mib}:big") as opened:
            blob = opened.manifest.blobs[0]
            assert blob.compressed and blob.data_size == mib << 20
            assert blob.size < blob.data_size * 0.6
    print(f"peak RSS converting 16 / 96 MiB of text: {peaks[16] // 1024} / "
          f"{peaks[96] // 1024} MiB")
    assert peaks[96] < peaks[16] + 16 * 1024, peaks
