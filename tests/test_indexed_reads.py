"""An ordinary image read lazily through its index: the cache, the reader, the trust rule."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from clikit import erofsd
from erofsd.errors import BadReference, NotFound
from erofsd.images import ReadOptions, open_image
from erofsd.oci.indexartifact import index_reference
from erofsd.oci.layout import OciLayout
from imagekit import umoci_image, umoci_unpack, write_image
from oci.test_convert import feature_layers
from treeutil import assert_same_tree, snapshot_dir, snapshot_image


@pytest.fixture(scope="module")
def ordinary(tmp_path_factory):
    root = tmp_path_factory.mktemp("ordinary")
    stdlib = Path(sys.modules["json"].__file__).parent.parent
    reference = umoci_image(root / "layout", "real", [stdlib / "email", stdlib / "json",
                                                       stdlib / "asyncio"])
    report = index_reference(reference, span_size=64 << 10)
    expected = snapshot_dir(umoci_unpack(reference, root / "bundle"))
    expected.pop(b"/")
    return {"ref": reference, "index": report.index.digest, "expected": expected,
            "image_bytes": report.image_bytes, "table_bytes": report.table_bytes,
            "window_bytes": report.window_bytes, "root": root}


def test_the_whole_tree_reads_back_through_the_cache_and_once(ordinary, tmp_path):
    options = ReadOptions(state_dir=str(tmp_path / "state"), index=ordinary["index"])
    with open_image(ordinary["ref"], options=options) as opened:
        assert opened.image.block_size == 512
        tree = snapshot_image(opened.image)
        fetched = sum(b.stats.fetched_bytes for b in opened.blobs)
    tree.pop(b"/")
    assert_same_tree(tree, ordinary["expected"])
    # each layer's span table, then every span once (all but the gzip headers), nothing
    # twice, and windows for the spans read before the one ahead of them
    spans = fetched - ordinary["table_bytes"]
    assert ordinary["image_bytes"] - 3 * 10 <= spans
    assert spans <= ordinary["image_bytes"] + ordinary["window_bytes"]


def test_one_file_fetches_its_spans_not_the_layer(ordinary, tmp_path):
    options = ReadOptions(state_dir=str(tmp_path / "state"), index=ordinary["index"])
    with open_image(ordinary["ref"], options=options) as opened:
        opened.blobs[0].tuning.whole_layer = 0  # these layers are small
        image = opened.image
        inode = image.lookup(b"/message.py")  # umoci copied each tree's contents to /
        data = image.read(inode, 0, inode.size)
        fetched = sum(b.stats.fetched_bytes for b in opened.blobs)
    assert data == (Path(sys.modules["email"].__file__).parent / "message.py").read_bytes()
    assert 0 < fetched - ordinary["table_bytes"] < ordinary["image_bytes"] / 4


def test_a_span_fetches_its_window_only_when_the_data_before_it_is_not_here(ordinary,
                                                                           tmp_path):
    options = ReadOptions(state_dir=str(tmp_path / "state"), index=ordinary["index"],
                          readahead=0)
    with open_image(ordinary["ref"], options=options) as opened:
        blob = max(opened.blobs, key=lambda b: len(b.table.frames))
        blob.tuning.whole_layer = 0  # these layers are small
        table = blob.table
        k = next(i for i, p in enumerate(table.checkpoints) if i and p.window_length
                 and table.checkpoints[i + 1].window_length)
        spans = [table.frames[i] for i in (k, k + 1)]
        before = blob.stats.fetched_bytes
        assert blob.read_at(spans[0].offset, 1)
        assert blob.stats.fetched_bytes - before == (spans[0].stored_length
                                                     + table.checkpoints[k].window_stored_length)
        before = blob.stats.fetched_bytes
        assert blob.read_at(spans[1].offset, 1)  # entered with the bytes of span k
        assert blob.stats.fetched_bytes - before == spans[1].stored_length


def test_a_small_layer_is_fetched_whole_at_its_first_miss_with_no_window(ordinary, tmp_path):
    options = ReadOptions(state_dir=str(tmp_path / "state"), index=ordinary["index"])
    with open_image(ordinary["ref"], options=options) as opened:
        blob = max(opened.blobs, key=lambda b: len(b.table.frames))
        assert len(blob.table.frames) > 2 and blob.ref.size <= blob.tuning.whole_layer
        before = blob.stats.fetched_bytes
        last = blob.table.frames[-1]
        assert blob.read_at(last.offset, 1)  # the last span, which has a window
        assert blob.stats.fetched_bytes - before == blob.table.stored_size - \
            blob.table.frames[0].stored_offset  # every span once, in one go, no window
        assert blob.complete and blob.stats.misses == 1


def test_a_window_blob_gone_short_fails_the_read_it_is_needed_for_and_marks_nothing(ordinary,
                                                                                  tmp_path):
    from erofsd.errors import ErofsdError

    layout = Path(ordinary["ref"].removeprefix("oci:").rsplit(":", 1)[0])
    manifest = json.loads(OciLayout.open(layout).read_blob(ordinary["index"]))
    options = ReadOptions(state_dir=str(tmp_path / "state"), index=ordinary["index"],
                          readahead=0)
    with open_image(ordinary["ref"], options=options) as opened:  # a mount needs no window
        blob = max(opened.blobs, key=lambda b: len(b.table.frames))
        blob.tuning.whole_layer = 0
        (window_blob,) = [d for d in manifest["layers"]
                          if d["digest"] == blob.ref.windows_blob.digest]
        k = next(i for i, p in enumerate(blob.table.checkpoints) if p.window_length)
        span = blob.table.frames[k]
        path = OciLayout.open(layout).blob_path(window_blob["digest"])
        windows = path.read_bytes()
        os.truncate(path, 0)  # in place: a file the source holds open sees it too
        try:
            with pytest.raises(ErofsdError, match="shorter"):
                blob.read_at(span.offset, 1)
            assert not blob.is_present(span.offset, span.length)
        finally:
            path.write_bytes(windows)
        tar = blob.read_at(span.offset, span.length)  # back: the same read now works
        assert blob.table.verify(k, tar)


def test_an_index_whose_window_blob_is_not_its_tables_is_refused_at_open(tmp_path):
    from erofsd.errors import CorruptImage

    source = write_image(tmp_path / "img", "t", feature_layers())
    index = index_reference(source).index.digest
    layout = OciLayout.open(tmp_path / "img")
    manifest = json.loads(layout.read_blob(index))
    windows = manifest["layers"][2]
    manifest["layers"][2] = {**windows, "size": windows["size"] + 1}
    lying = layout.put_bytes(json.dumps(manifest).encode())
    with pytest.raises(CorruptImage, match="window blob is"):
        open_image(source, options=ReadOptions(state_dir=str(tmp_path / "s"), index=lying))


def test_the_cli_reads_through_an_index_and_discovers_one_when_asked(ordinary, tmp_path):
    out = erofsd("cat", ordinary["ref"], "/decoder.py", "--index", ordinary["index"],
                 "--state-dir", str(tmp_path / "s1"))
    assert out.returncode == 0, out.stderr
    assert out.stdout == (Path(sys.modules["json"].__file__).parent / "decoder.py").read_bytes()
    found = erofsd("ls", ordinary["ref"], "/", "--index", "discover",
                   "--state-dir", str(tmp_path / "s2"))
    assert found.returncode == 0 and b"events.py" in found.stdout
    plain = erofsd("ls", ordinary["ref"], "/")
    assert plain.returncode == 1 and b"not an erofsd image" in plain.stderr


def test_an_index_of_another_image_is_refused(ordinary, tmp_path):
    other = write_image(tmp_path / "other", "t", feature_layers())
    theirs = index_reference(other).index.digest
    layout = OciLayout.open(tmp_path / "other")
    ours = OciLayout.open(Path(ordinary["ref"].removeprefix("oci:").rsplit(":", 1)[0]))
    ours.put_bytes(layout.read_blob(theirs))  # a referrer that lies about its subject
    with pytest.raises(BadReference, match="indexes image"):
        open_image(ordinary["ref"], options=ReadOptions(state_dir=str(tmp_path / "s"),
                                                        index=theirs))
    with pytest.raises(NotFound, match="no index sha256:0000"):
        open_image(other, options=ReadOptions(state_dir=str(tmp_path / "s"),
                                              index="sha256:" + "0" * 64))
    bare = write_image(tmp_path / "bare", "t", feature_layers())
    with pytest.raises(NotFound, match="no erofsd index"):
        open_image(bare, options=ReadOptions(state_dir=str(tmp_path / "s"), index="discover"))
    manifest = json.loads(layout.read_blob(theirs))
    manifest["layers"] = manifest["layers"][:-1]  # a window blob short
    bad = layout.put_bytes(json.dumps(manifest).encode())
    with pytest.raises(BadReference, match="a span table and its windows per layer"):
        open_image(other, options=ReadOptions(state_dir=str(tmp_path / "s"), index=bad))


def test_inspect_and_check_know_an_index(ordinary, tmp_path):
    state = ["--index", ordinary["index"], "--state-dir", str(tmp_path / "s")]
    shown = erofsd("inspect", ordinary["ref"], "--json", *state)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["index"] == ordinary["index"] and info["superblock"]["block_size"] == 512
    assert {b["compression"] for b in info["blobs"]} == {"gzip"}
    assert all(b["frames"] == b["chunks"] > 0 for b in info["blobs"])
    text = erofsd("inspect", ordinary["ref"], *state).stdout
    assert b"through this index" in text and b"spans" in text
    checked = erofsd("check", ordinary["ref"], *state)
    assert checked.returncode == 0 and checked.stdout.startswith(b"ok:"), checked.stderr


def test_a_lying_index_is_caught_once_a_layer_is_whole_and_nothing_stays_present(tmp_path):
    """What only the index vouches for (a span's digest; its window shapes what the span
    inflates to) is checked against the image's diff_id when the layer is whole."""
    import dataclasses
    import hashlib
    import io

    from erofsd.erofs.chunktable import span_table
    from erofsd.erofs.gzipspans import GzipIndexer, inflate_span
    from erofsd.errors import IntegrityError
    from erofsd.oci.descriptor import sha256_digest
    from erofsd.oci.mediatypes import INDEX_SPANS, INDEX_WINDOWS
    from imagekit import TarBuilder

    text = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i
                    for i in range(20_000))
    source = write_image(tmp_path / "img", "t", [TarBuilder().file("big.txt", text).bytes()])
    honest = index_reference(source, span_size=64 << 10).index.digest
    layout = OciLayout.open(tmp_path / "img")
    manifest = json.loads(layout.read_blob(honest))
    blob = layout.read_blob(json.loads(layout.read_blob(manifest["subject"]["digest"]))
                            ["layers"][0]["digest"])
    indexer = GzipIndexer(io.BytesIO(blob).read, 64 << 10)
    while indexer.read(1 << 20):
        pass
    spans = list(indexer.spans)
    k = 1  # a span entered with a window: a window of other bytes inflates to other bytes
    span = spans[k]
    lie = dataclasses.replace(span.checkpoint, window=bytes(len(span.checkpoint.window)))
    forged = inflate_span(lie, blob[span.in_offset:span.in_offset + span.in_length],
                          span.out_length)
    assert forged != text[span.out_offset - 512:][:span.out_length]
    spans[k] = dataclasses.replace(span, checkpoint=lie,
                                   out_digest=hashlib.sha256(forged).digest())
    table, windows = span_table(spans)
    for n, data in (1, table.pack()), (2, windows):
        manifest["layers"][n] = {**manifest["layers"][n], "digest": layout.put_bytes(data),
                                 "size": len(data)}
    assert [d["mediaType"] for d in manifest["layers"][1:]] == [INDEX_SPANS, INDEX_WINDOWS]
    lying = layout.put_bytes(json.dumps(manifest).encode())
    assert lying == sha256_digest(json.dumps(manifest).encode())
    options = ReadOptions(state_dir=str(tmp_path / "state"), index=lying)
    with open_image(source, options=options) as opened:
        image, (layer,) = opened.image, opened.blobs
        inode = image.lookup(b"/big.txt")
        with pytest.raises(IntegrityError, match="not its diff_id"):
            image.read(inode, 0, inode.size)
        assert layer.cached_bytes == 0 and not layer.complete
        with pytest.raises(IntegrityError):
            image.read(inode, 0, 100)
