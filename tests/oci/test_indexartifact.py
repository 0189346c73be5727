"""The index published as an artifact beside its image, and listed under its referrers."""

from __future__ import annotations

import json

import pytest

from clikit import erofsd
from erofsd.erofs.chunktable import ChunkTable
from erofsd.oci.copy import push
from erofsd.oci.indexartifact import index_reference
from erofsd.oci.layout import OciLayout
from erofsd.oci.mediatypes import (
    DIFF_ID,
    INDEX_ARTIFACT,
    INDEX_BOOTSTRAP,
    INDEX_SPANS,
    INDEX_WINDOWS,
    LAYER,
)
from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
from erofsd.oci.referrers import fallback_tag, of_type, referrers_in
from erofsd.oci.registry import RegistryClient
from erofsd.oci.transport import Transport
from imagekit import write_image
from oci.test_convert import feature_layers


def test_an_index_lands_beside_its_layout_image_once_however_often_it_is_made(tmp_path):
    source = write_image(tmp_path / "img", "t", feature_layers())
    first = index_reference(source)
    again = index_reference(source)
    assert first.index == again.index  # no timestamp: the same digest
    layout = OciLayout.open(tmp_path / "img")
    listed = layout.read_blob(layout.resolve(fallback_tag(first.subject.digest)).digest)
    (entry,) = of_type(referrers_in(listed), INDEX_ARTIFACT)
    assert entry.digest == first.index.digest
    manifest = json.loads(layout.read_blob(first.index.digest))
    assert manifest["artifactType"] == INDEX_ARTIFACT
    assert manifest["subject"]["digest"] == first.subject.digest == layout.resolve("t").digest
    bootstrap, *parts = manifest["layers"]
    tables, windows = parts[0::2], parts[1::2]
    assert bootstrap["mediaType"] == INDEX_BOOTSTRAP
    image = json.loads(layout.read_blob(layout.resolve("t").digest))
    for which in tables, windows:
        assert [t["annotations"][LAYER] for t in which] == [d["digest"]
                                                            for d in image["layers"]]
    assert all(t["mediaType"] == INDEX_SPANS for t in tables)
    assert all(w["mediaType"] == INDEX_WINDOWS for w in windows)
    table = ChunkTable.unpack(layout.read_blob(tables[0]["digest"]))
    assert table.version == 3 and table.stored_size == image["layers"][0]["size"]
    assert table.window_blob_size == windows[0]["size"]
    assert first.to_json()["span_table_bytes"] == sum(t["size"] for t in tables)
    assert first.to_json()["window_bytes"] == sum(w["size"] for w in windows)
    assert tables[0]["annotations"][DIFF_ID].startswith("sha256:")


def test_an_index_lands_in_the_registry_beside_its_image(tmp_path, registry):
    source = write_image(tmp_path / "img", "t", feature_layers())
    target = registry.ref("index/feature", "v1")
    push(parse_layout_ref(source), parse_registry_ref(target), Transport(insecure=True))
    report = index_reference(target, insecure=True)
    assert report.destination == target.rsplit(":", 1)[0]
    client = RegistryClient(registry.host, Transport(insecure=True))
    ref = parse_registry_ref(target)
    listed, _, _ = client.get_manifest(ref.with_reference(tag=fallback_tag(report.subject.digest)))
    assert [d.digest for d in of_type(referrers_in(listed), INDEX_ARTIFACT)] == \
        [report.index.digest]
    raw, _, digest = client.get_manifest(ref.with_reference(digest=report.index.digest))
    for layer in json.loads(raw)["layers"]:
        assert client.blob_size(ref.repository, layer["digest"]) == layer["size"]


def test_the_cli_prints_the_digest_and_refuses_what_it_cannot_index(tmp_path):
    source = write_image(tmp_path / "img", "t", feature_layers())
    result = erofsd("index", source, f"oci:{tmp_path / 'elsewhere'}", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["index"].startswith("sha256:") and report["layers"] == 2
    assert OciLayout.open(tmp_path / "elsewhere").has_blob(report["index"])
    zstd = write_image(tmp_path / "zstd", "t", feature_layers(), compression="zstd")
    refused = erofsd("index", zstd)
    assert refused.returncode == 1 and b"convert the image" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    tiny = erofsd("index", source, "--span-size", "4K")
    assert tiny.returncode == 1 and b"below" in tiny.stderr


@pytest.mark.parametrize("bad", [b'{"manifests": 5}', b'{"manifests": [{"digest": 1}]}'])
def test_a_bad_referrers_list_is_refused(bad):
    from erofsd.errors import BadReference
    with pytest.raises(BadReference):
        referrers_in(bad)
