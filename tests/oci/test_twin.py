"""Twin indexes (oci/twin.py): written beside the ordinary image, found again for it."""

from __future__ import annotations

import json

import pytest

from erofsd.errors import BadReference
from erofsd.images import open_image
from erofsd.oci.convert import convert
from erofsd.oci.layout import OciLayout
from erofsd.oci.mediatypes import EROFSD_IMAGE_ANNOTATION, OCI_INDEX
from erofsd.oci.twin import SOURCE_MANIFEST, find_twin
from imagekit import TarBuilder, write_image


def test_converting_in_place_keeps_the_ordinary_image_first(tmp_path):
    layer = TarBuilder().file("etc/motd", b"twin\n").bytes()
    source = write_image(tmp_path / "layout", "v1", [layer])
    layout = OciLayout.open(tmp_path / "layout")
    ordinary = layout.resolve("v1")
    report = convert(source, source, state_dir=tmp_path / "state", twin=True)
    index = layout.resolve("v1")
    assert index.media_type == OCI_INDEX and index.digest == report.twin_index.digest
    raw = layout.read_blob(index.digest)
    first, twin = json.loads(raw)["manifests"]
    assert first["digest"] == ordinary.digest  # what containerd 1.6 takes from the index
    assert twin["annotations"] == {EROFSD_IMAGE_ANNOTATION: "true",
                                   SOURCE_MANIFEST: ordinary.digest}
    assert find_twin(raw, ordinary.digest).digest == report.manifest.digest
    assert find_twin(raw, "sha256:" + "0" * 64) is None and find_twin(b"{}", "x") is None
    with open_image(source) as opened:  # erofsd's readers take the twin
        assert opened.manifest.digest == report.manifest.digest
        assert opened.image.read(opened.image.lookup("/etc/motd"), 0, 10) == b"twin\n"


def test_a_twin_must_live_beside_its_ordinary_image(tmp_path):
    source = write_image(tmp_path / "a", "v1", [TarBuilder().file("f", b"x").bytes()])
    with pytest.raises(BadReference, match="same repository"):
        convert(source, f"oci:{tmp_path / 'b'}:v1", state_dir=tmp_path / "state", twin=True)
