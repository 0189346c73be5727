"""erofsd's index of an ordinary image: one read of each gzip layer, everything checked."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest

from builds import kernel_mounted
from erofsd.erofs.chunktable import ChunkTable
from erofsd.errors import IntegrityError, Unsupported
from erofsd.oci.descriptor import Descriptor
from erofsd.oci.indexer import index_image
from erofsd.oci.layout import OciLayout
from erofsd.oci.source import resolve_image
from erofsd.oci.transport import Transport
from imagekit import umoci_image, umoci_unpack, write_image
from oci.test_convert import feature_layers
from skips import requires_kernel
from treeutil import assert_same_tree, snapshot_dir


def indexed(reference: str, span_size: int = 1 << 20):
    image = resolve_image(reference, transport=Transport())
    subject = Descriptor("application/vnd.oci.image.manifest.v1+json", image.digest,
                         len(image.manifest))
    return image, index_image(image, subject, span_size=span_size)


@requires_kernel
def test_an_umoci_image_indexed_mounts_over_its_tars_and_every_span_opens(tmp_path):
    stdlib = Path(sys.modules["json"].__file__).parent.parent
    reference = umoci_image(tmp_path / "layout", "real", [stdlib / "email", stdlib / "json"])
    image, index = indexed(reference, span_size=256 << 10)
    layout = OciLayout.open(tmp_path / "layout")
    devices = []
    for n, layer in enumerate(index.layers):
        blob = layout.read_blob(layer.layer.digest)
        tar = gzip.decompress(blob)
        assert (layer.tar_size, layer.table.data_size) == (len(tar), len(tar))
        assert layer.table.stored_size == len(blob)
        table = ChunkTable.unpack(layer.table.pack(), len(tar), len(blob))
        assert table.window_blob_size == len(layer.windows)
        # each span alone, entered with its own window from the window blob
        assert b"".join(table.open_frame(i, blob[f.stored_offset:f.stored_end],
                                         table.open_window(i, layer.windows[
                                             p.window_offset:][:p.window_stored_length]))
                        for i, (f, p) in enumerate(zip(table.frames, table.checkpoints,
                                                       strict=True))) == tar
        (tmp_path / f"{n}.tar").write_bytes(tar)
        devices.append(str(tmp_path / f"{n}.tar"))
    assert len(index.layers[0].table.frames) > 2
    (tmp_path / "bootstrap").write_bytes(index.bootstrap)
    expected = snapshot_dir(umoci_unpack(reference, tmp_path / "bundle"))
    with kernel_mounted(str(tmp_path / "bootstrap"), devices) as mnt:
        got = snapshot_dir(mnt)
    got.pop(b"/"), expected.pop(b"/")
    assert_same_tree(got, expected)
    assert index.subject.digest == image.digest


def test_every_layer_is_checked_and_only_gzip_layers_are_indexed(tmp_path):
    layers = feature_layers()
    _, index = indexed(write_image(tmp_path / "ok", "t", layers))
    assert [layer.tar_size for layer in index.layers] == [len(t) for t in layers]
    with pytest.raises(IntegrityError, match="does not match diff_id"):
        indexed(write_image(tmp_path / "diff", "t", layers, bad_diff_id=True))
    with pytest.raises(IntegrityError, match="layer 1/2"):
        indexed(write_image(tmp_path / "tampered", "t", layers, tamper_layer=0))
    for compression in ("zstd", ""):
        with pytest.raises(Unsupported, match="convert the image"):
            indexed(write_image(tmp_path / f"c{compression}", "t", layers,
                                compression=compression))
