"""The volume's chunk index: sharing outlives the blobs' users, restarts, GC, kill -9 and a
damaged index; on xfs the copy is a reflink that outlives its source."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from erofsd.cache.chunkindex import ENTER_BATCH, INDEX_FILE, ChunkIndex
from erofsd.cache.store import BlobCache, volume_dirname
from erofsd.erofs.chunktable import ChunkEntry, ChunkTable
from erofsd.images import open_resolved
from erofsd.oci.source import resolve_image
from erofsd.pools import process_pool
from sharekit import common_bytes, read_all, shared_bytes, two_images
from skips import requires_kernel, requires_tool
from treeutil import snapshot_image

VOLUME = "erofs,d1"


def index_path(state: Path) -> Path:
    return state / "cache" / volume_dirname(VOLUME) / INDEX_FILE


@pytest.fixture
def xfs_dir(tmp_path):
    """A fresh xfs with reflinks on a loop device, unmounted after the test."""
    image, mountpoint = tmp_path / "xfs.img", tmp_path / "xfs"
    with open(image, "wb") as f:
        f.truncate(512 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_blob_no_process_has_open_still_lends_its_chunks(tmp_path):
    a, b = two_images(tmp_path)
    state = tmp_path / "state"
    read_all(BlobCache(state), a, VOLUME)  # a is cached, then closed: nothing of it is open
    second = read_all(BlobCache(state), b, VOLUME)  # a new cache, as after a restart
    alone = read_all(BlobCache(tmp_path / "other"), b, VOLUME)
    shared = common_bytes(tmp_path)
    assert second.tree == alone.tree
    assert second.local >= shared and second.fetched <= alone.fetched - shared


def test_gc_of_the_source_changes_nothing_for_the_copy_and_the_index_forgets_it(tmp_path):
    a, b = two_images(tmp_path)
    state = tmp_path / "state"
    first = read_all(BlobCache(state), a, VOLUME)
    alone = read_all(BlobCache(tmp_path / "other"), b, VOLUME)
    cache = BlobCache(state)
    with open_resolved(resolve_image(b), cache, VOLUME) as second:
        assert snapshot_image(second.image) == alone.tree
        (blob,) = second.blobs
        fetched = blob.stats.fetched_bytes
        report = cache.gc()
        assert len(report.removed) == 1 and report.kept_in_use == 1  # a went; b is in use
        assert snapshot_image(second.image) == alone.tree
        assert blob.stats.fetched_bytes == fetched  # every chunk b holds is still b's
        index = ChunkIndex(Path(blob.data_path).parent)
        holders = {row[0] for e in blob.table.entries for row in index.places(e.digest,
                                                                               e.length, "")}
        index.close()
        assert holders == {blob.ref.digest.split(":")[1]}
    again = read_all(BlobCache(state), a, VOLUME)  # a once more: the common part from b
    assert again.tree == first.tree and again.local >= common_bytes(tmp_path)


KILL_AFTER_A_LOCAL_FILL = textwrap.dedent("""
    import os, signal, sys
    from erofsd.cache import chunkshare
    from erofsd.cache.store import BlobCache
    from erofsd.images import open_resolved
    from erofsd.oci.source import resolve_image

    fill = chunkshare.VolumeChunks.fill

    def fill_then_die(self, blob, fd, chunks):  # written, not yet marked
        if fill(self, blob, fd, chunks) is not None:
            os.kill(os.getpid(), signal.SIGKILL)

    chunkshare.VolumeChunks.fill = fill_then_die
    state, ref, volume = sys.argv[1:]
    with open_resolved(resolve_image(ref), BlobCache(state), volume) as opened:
        for blob in opened.blobs:
            blob.read_at(0, blob.size)
""")


def test_kill_9_between_a_local_copy_and_its_mark_leaves_it_unmarked(tmp_path):
    a, b = two_images(tmp_path)
    state = tmp_path / "state"
    read_all(BlobCache(state), a, VOLUME)
    child = subprocess.run([sys.executable, "-c", KILL_AFTER_A_LOCAL_FILL, str(state), b,
                            VOLUME], capture_output=True, timeout=120)
    assert child.returncode == -9, child.stderr.decode()
    alone = read_all(BlobCache(tmp_path / "other"), b, VOLUME)
    cache = BlobCache(state)
    with open_resolved(resolve_image(b), cache, VOLUME) as opened:
        (blob,) = opened.blobs
        right_but_unmarked = 0
        with open(blob.data_path, "rb") as f:
            for i, entry in enumerate(blob.table.entries):
                landed = os.pread(f.fileno(), entry.length, entry.offset)
                if blob.pmap.is_present(i):
                    assert blob.table.verify(i, landed)  # marked means verified
                elif blob.table.verify(i, landed):
                    right_but_unmarked += 1
        assert right_but_unmarked == 1  # the copy the kill interrupted
        assert snapshot_image(opened.image) == alone.tree


@pytest.mark.parametrize("filesystem", ["as tmp", "xfs"])
def test_an_index_that_points_wrong_costs_a_fetch_never_a_wrong_byte(tmp_path, filesystem,
                                                                      request):
    """Copied (tmp: ext4 here) or reflinked (xfs): checked where it lands either way."""
    a, b = two_images(tmp_path)
    state = (request.getfixturevalue("xfs_dir") if filesystem == "xfs" else tmp_path) / "state"
    read_all(BlobCache(state), a, VOLUME)
    with sqlite3.connect(index_path(state)) as db:
        db.execute("UPDATE chunks SET offset = offset + 4096")
    db.close()
    second = read_all(BlobCache(state), b, VOLUME)
    alone = read_all(BlobCache(tmp_path / "other"), b, VOLUME)
    assert second.tree == alone.tree
    assert second.local == 0 and second.fetched == alone.fetched
    assert second.reflinked == 0


@pytest.mark.parametrize("damage", ["garbage", "gone"])
def test_a_damaged_or_lost_index_is_rebuilt_from_the_cache_files(tmp_path, damage):
    a, b = two_images(tmp_path)
    state = tmp_path / "state"
    read_all(BlobCache(state), a, VOLUME)
    path = index_path(state)
    if damage == "garbage":
        path.write_bytes(b"not a database at all " * 512)
    else:
        path.unlink()
    second = read_all(BlobCache(state), b, VOLUME)
    alone = read_all(BlobCache(tmp_path / "other"), b, VOLUME)
    assert second.tree == alone.tree and second.local >= common_bytes(tmp_path)


@requires_kernel
@requires_tool("mkfs.xfs")
def test_on_xfs_the_copy_is_a_reflink_that_outlives_its_source(tmp_path, xfs_dir):
    a, b = two_images(tmp_path)
    state = xfs_dir / "state"
    read_all(BlobCache(state), a, VOLUME)
    alone = read_all(BlobCache(tmp_path / "other"), b, VOLUME)
    cache = BlobCache(state)
    with open_resolved(resolve_image(b), cache, VOLUME) as second:
        assert snapshot_image(second.image) == alone.tree
        (blob,) = second.blobs
        assert blob.stats.local_bytes >= common_bytes(tmp_path)
        assert blob.stats.reflinked_bytes > 0.9 * blob.stats.local_bytes
        assert shared_bytes(blob.data_path) >= blob.stats.reflinked_bytes
        fetched = blob.stats.fetched_bytes
        assert len(cache.gc().removed) == 1  # a, whose blocks b shares
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3")  # read b's blocks from the disk
        assert snapshot_image(second.image) == alone.tree
        assert blob.stats.fetched_bytes == fetched


def test_a_table_goes_in_a_batch_per_transaction_not_a_row(tmp_path):
    """In autocommit mode ``with db`` begins nothing: each row was its own synced
    transaction (28 s for the stdlib's 44,587 chunks, on every first mount)."""
    table = ChunkTable(tuple(ChunkEntry(i << 12, 4096, hashlib.sha256(b"%d" % i).digest())
                             for i in range(2 * ENTER_BATCH + 1)))
    index = ChunkIndex(tmp_path)
    begun = []
    index._db.set_trace_callback(lambda sql: begun.append(sql) if sql.startswith("BEGIN")
                                 else None)
    index.enter("ab" * 32, table)
    index.enter("ab" * 32, table)  # once only
    index.close()
    assert len(begun) == -(-len(table.entries) // ENTER_BATCH) + 1
    index = ChunkIndex(tmp_path)
    first = table.entries[0]
    assert ("ab" * 32, 0, first.offset) in index.places(first.digest, first.length, "")
    index.close()


def test_a_mount_does_not_wait_for_its_table_to_go_in(tmp_path):
    """The index's thread held up: the blob opens and reads all the same, and its table
    is in once the thread is free."""
    a, _ = two_images(tmp_path)
    state = tmp_path / "state"
    held = threading.Event()
    process_pool("erofsd-chunk-index", 1).submit(held.wait, 60)

    def places_of_last(blob) -> list:
        entry = blob.table.entries[-1]
        index = ChunkIndex(index_path(state).parent)
        try:
            return index.places(entry.digest, entry.length, "")
        finally:
            index.close()

    try:
        with open_resolved(resolve_image(a), BlobCache(state), VOLUME) as opened:
            tree = snapshot_image(opened.image)
            (blob,) = opened.blobs
            before = places_of_last(blob)
            held.set()
    finally:
        held.set()
    assert tree == read_all(BlobCache(tmp_path / "other"), a, VOLUME).tree
    assert before == []
    name = blob.ref.digest.split(":")[1]
    assert places_of_last(blob) == [(name, len(blob.table.entries) - 1,
                                     blob.table.entries[-1].offset)]
