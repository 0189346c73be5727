"""A tar index: our 512-byte-block bootstrap over the layers' own tars, read by the kernel."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
from pathlib import Path

import pytest

from builds import kernel_mounted
from erofsd.erofs.tarindex import TarIndex, index_tar_layers
from erofsd.errors import BuildError
from erofsd.images import open_image
from erofsd.oci.layout import OciLayout
from imagekit import TarBuilder, umoci_image, umoci_unpack, write_image
from oci.test_convert import feature_layers
from skips import requires_kernel
from treeutil import assert_same_tree, snapshot_dir, snapshot_image


def layer_tars(reference: str) -> list[bytes]:
    """The uncompressed tars of an ordinary image's layers, in order."""
    root = Path(reference.removeprefix("oci:").rsplit(":", 1)[0])
    layout = OciLayout.open(root)
    manifest = json.loads(layout.read_blob(layout.resolve(reference.rsplit(":", 1)[1]).digest))
    return [gzip.decompress(layout.read_blob(layer["digest"])) for layer in manifest["layers"]]


def index_files(tars: list[bytes], out: Path, **options) -> tuple[TarIndex, str, list[str]]:
    index = index_tar_layers([(f"{i + 1}", io.BytesIO(t)) for i, t in enumerate(tars)],
                             **options)
    out.mkdir()
    bootstrap = out / "bootstrap"
    bootstrap.write_bytes(index.bootstrap)
    devices = []
    for n, tar in enumerate(tars):
        (out / f"layer{n}.tar").write_bytes(tar)
        devices.append(str(out / f"layer{n}.tar"))
    return index, str(bootstrap), devices


def both_views(bootstrap: str, devices: list[str]) -> tuple[dict, dict]:
    """(our reader's tree, the kernel's) of the index over the tars."""
    with open_image(bootstrap, devices) as opened:
        assert opened.image.block_size == 512
        ours = snapshot_image(opened.image)
    with kernel_mounted(bootstrap, devices) as mnt:
        return ours, snapshot_dir(mnt)


@requires_kernel
def test_every_tar_feature_reads_back_from_the_tars_themselves(tmp_path):
    layers = feature_layers()
    reference = write_image(tmp_path / "ref", "t", layers)
    index, bootstrap, devices = index_files(layers, tmp_path / "index")
    assert [d.diff_id for d in index.devices] == \
        ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
    assert [d.size for d in index.devices] == [len(t) for t in layers]
    expected = snapshot_dir(umoci_unpack(reference, tmp_path / "bundle"))
    # directories no entry described get umoci's own times; umoci ignores LIBARCHIVE xattrs
    implied = [b"/", b"/bin", b"/dev", b"/gnu", b"/x", b"/d", b"/implicit", b"/implicit/deep",
               b"/x/attrs"]
    for path in implied:
        expected.pop(path)
    ours, kernel = both_views(bootstrap, devices)
    for view in (ours, kernel):
        assert_same_tree({p: e for p, e in view.items() if p not in implied}, expected)
    assert ours[b"/bin/tool"].links == (b"/bin/tool", b"/bin/tool2", b"/bin/tool3")
    assert b"/run" not in kernel and b"/d/new" in kernel  # whiteout and opaque dir applied
    assert len(index.bootstrap) < sum(map(len, layers)) // 4  # metadata only


@requires_kernel
def test_umoci_images_of_real_trees_read_back(tmp_path):
    stdlib = Path(sys.modules["json"].__file__).parent.parent
    reference = umoci_image(tmp_path / "layout", "real",
                            [stdlib / "email", stdlib / "json", stdlib / "asyncio"])
    tars = layer_tars(reference)
    expected = snapshot_dir(umoci_unpack(reference, tmp_path / "bundle"))
    expected.pop(b"/")
    for chunk_size in (512, 1 << 20):
        _, bootstrap, devices = index_files(tars, tmp_path / f"index-{chunk_size}",
                                            chunk_size=chunk_size)
        ours, kernel = both_views(bootstrap, devices)
        for view in (ours, kernel):
            view.pop(b"/")
            assert_same_tree(view, expected)


def test_the_index_is_a_pure_function_of_the_tars(tmp_path):
    layers = feature_layers()
    a = index_tar_layers([("1", io.BytesIO(layers[0])), ("2", io.BytesIO(layers[1]))])
    b = index_tar_layers([("1", io.BytesIO(layers[0])), ("2", io.BytesIO(layers[1]))])
    assert a == b


def test_what_cannot_be_indexed_is_refused_naming_it():
    sparse = TarBuilder().file("ok", b"fine").sparse("holes", 1 << 20, [(4096, b"data")]).bytes()
    with pytest.raises(BuildError, match="layer 1: .*sparse.*convert the image"):
        index_tar_layers([("1", io.BytesIO(sparse))])
    with pytest.raises(BuildError, match="'..'"):
        index_tar_layers([("1", io.BytesIO(TarBuilder().file("a/../../x", b"x").bytes()))])
    with pytest.raises(BuildError, match="at least one layer"):
        index_tar_layers([])
