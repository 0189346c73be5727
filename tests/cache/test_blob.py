"""A cached blob: lazy, verified, single-flight, merged, shared across processes."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cachekit import CountingSource, open_blob
from erofsd.cache.blob import CacheTuning
from erofsd.cache.fill import BackgroundFill
from erofsd.cache.presentmap import HEADER, Header
from erofsd.cache.store import BlobCache
from erofsd.errors import CacheError, IntegrityError
from erofsd.oci.source import LayoutSource


def test_reads_are_lazy_and_verified(image, tmp_path):
    cache, blob, source = open_blob(image, tmp_path)
    ref = image["ref"]
    assert source.requests == [(ref.data_size, ref.table_size)]  # only the table so far
    assert blob.read_at(65536 * 3 + 10, 100) == image["blob_bytes"][65536 * 3 + 10:65536 * 3 + 110]
    assert source.requests[1:] == [(65536 * 3, 65536)]
    assert blob.read_at(65536 * 3, 200) == image["blob_bytes"][65536 * 3:65536 * 3 + 200]
    assert len(source.requests) == 2  # a hit
    assert (blob.stats.hits, blob.stats.misses) == (1, 1)
    assert blob.cached_bytes == 65536
    cache.release(blob)


def test_adjacent_misses_merge_up_to_the_limit(image, tmp_path):
    cache, blob, source = open_blob(image, tmp_path, merge_limit=4 * 65536)
    data = blob.read_at(0, 10 * 65536)
    assert data == image["blob_bytes"][:10 * 65536]
    assert source.requests[1:] == [(0, 4 * 65536), (4 * 65536, 4 * 65536),
                                   (8 * 65536, 2 * 65536)]
    cache.release(blob)


def test_readahead_window_and_off(image, tmp_path):
    cache, blob, source = open_blob(image, tmp_path / "a", readahead=3 * 65536)
    blob.read_at(0, 10)  # the start of the blob begins a stream: a window applies
    assert source.requests[1:] == [(0, 3 * 65536)]
    blob.read_at(65536 * 2, 10)  # inside the readahead: no request
    assert len(source.requests) == 2
    blob.read_at(65536 * 20, 10)  # a random miss fetches only what it needs
    assert source.requests[2:] == [(65536 * 20, 65536)]
    blob.read_at(65536 * 21, 10)  # continuing it is sequential: a window again
    assert source.requests[3:] == [(65536 * 21, 3 * 65536)]
    blob.read_at(65536 * 3, 10)  # continuing the first stream too, at the limit now
    assert source.requests[4:] == [(65536 * 3, 4 * 65536)]
    cache.release(blob)
    cache, blob, source = open_blob(image, tmp_path / "b", readahead=0)
    blob.read_at(0, 10)
    assert source.requests[1:] == [(0, 65536)]
    cache.release(blob)


def test_readahead_window_grows_with_the_stream(image, tmp_path):
    cache, blob, source = open_blob(image, tmp_path, readahead=6 * 65536)
    blob.read_at(65536 * 10, 10)  # random: no readahead
    blob.read_at(65536 * 11, 10)  # first continuation: twice the miss
    blob.read_at(65536 * 14, 10)  # then twice the last window
    blob.read_at(65536 * 19, 10)  # up to the limit
    assert source.requests[1:] == [(65536 * 10, 65536), (65536 * 11, 3 * 65536),
                                   (65536 * 14, 5 * 65536), (65536 * 19, 7 * 65536)]
    cache.release(blob)


def test_single_flight_within_a_process(image, tmp_path):
    source = CountingSource(LayoutSource(image["layout"]), delay=0.2)
    cache, blob, _ = open_blob(image, tmp_path, source=source)
    results = []
    threads = [threading.Thread(target=lambda: results.append(blob.read_at(65536 * 5, 65536)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [image["blob_bytes"][65536 * 5:65536 * 6]] * 8
    assert source.requests[1:] == [(65536 * 5, 65536)]
    cache.release(blob)


def test_a_fill_fetches_the_whole_blob_in_order_once_beside_a_reader(image, tmp_path):
    source = CountingSource(LayoutSource(image["layout"]), delay=0.02)
    cache, blob, _ = open_blob(image, tmp_path, source=source, merge_limit=4 * 65536)
    blob.read_at(65536 * 6, 10)  # present already: the fill skips it
    with BackgroundFill([blob, object()], streams=2):  # what is not a cached blob is left alone
        assert blob.read_at(65536 * 30, 65536) == image["blob_bytes"][65536 * 30:65536 * 31]
        deadline = time.monotonic() + 30
        while not blob.complete and time.monotonic() < deadline:
            time.sleep(0.01)
    assert blob.complete
    data = source.requests[1:]
    frames = sorted(offset // 65536 + k for offset, length in data
                    for k in range(length // 65536))
    assert frames == list(range(40)), "every frame fetched exactly once"
    assert max(length for _, length in data) == 4 * 65536
    assert blob.read_at(0, 40 * 65536) == image["blob_bytes"][:40 * 65536]
    cache.release(blob)


def test_a_fill_stops_at_the_end_of_its_block_and_on_a_failing_source(image, tmp_path):
    source = CountingSource(LayoutSource(image["layout"]), delay=0.05)
    cache, blob, _ = open_blob(image, tmp_path, source=source, merge_limit=65536)
    with BackgroundFill([blob], streams=1):
        time.sleep(0.12)
    fetched = len(source.requests)
    time.sleep(0.2)
    assert len(source.requests) == fetched and not blob.complete
    cache.release(blob)
    down = CountingSource(LayoutSource(image["layout"]))
    cache, blob, _ = open_blob(image, tmp_path / "down", source=down)
    down.fail = True
    with BackgroundFill([blob]):
        pass  # the threads give up at once; leaving the block does not hang
    assert blob.cached_bytes == 0
    down.fail = False
    assert blob.read_at(0, 10) == image["blob_bytes"][:10]  # the reader's own miss works
    cache.release(blob)


def test_lying_source_is_retried_then_refused(image, tmp_path):
    liar = CountingSource(LayoutSource(image["layout"]), corrupt_first=2)
    cache, blob, _ = open_blob(image, tmp_path, source=liar)  # table fetch: lies twice
    assert blob.read_at(0, 65536) == image["blob_bytes"][:65536]
    cache.release(blob)
    always = CountingSource(LayoutSource(image["layout"]), corrupt_first=10**9)
    with pytest.raises(IntegrityError):
        open_blob(image, tmp_path / "x", source=always)
    cache, blob, source = open_blob(image, tmp_path / "y")
    source.corrupt_left = 10**9
    with pytest.raises(IntegrityError, match="failed verification"):
        blob.read_at(0, 10)
    assert blob.cached_bytes == 0  # nothing wrong was kept
    source.corrupt_left = 0
    assert blob.read_at(0, 10) == image["blob_bytes"][:10]  # and the cache still works
    cache.release(blob)


def test_failed_source_falls_back_to_the_next(image, tmp_path):
    dead = CountingSource(LayoutSource(image["layout"]), fail=True)
    alive = CountingSource(LayoutSource(image["layout"]))
    cache = BlobCache(tmp_path, CacheTuning(readahead=0))
    blob = cache.acquire("erofs,t", image["ref"], [dead, alive])
    assert blob.read_at(100, 10) == image["blob_bytes"][100:110]
    assert dead.requests and alive.requests
    cache.release(blob)


def test_bytes_survive_reopen_and_fetched_bytes_add_up(image, tmp_path):
    cache, blob, source = open_blob(image, tmp_path)
    blob.read_at(0, 3 * 65536)
    cache.release(blob)
    cache, blob, source2 = open_blob(image, tmp_path)
    assert source2.requests == []  # the table and the chunks come from disk
    assert blob.read_at(0, 3 * 65536) == image["blob_bytes"][:3 * 65536]
    (listing,) = cache.list()
    (entry,) = listing.blobs
    assert entry.fetched_bytes == image["ref"].table_size + 3 * 65536
    assert entry.cached_bytes == 3 * 65536 and entry.in_use
    cache.release(blob)


def test_reboot_recovery_drops_torn_chunks(image, tmp_path):
    cache, blob, _ = open_blob(image, tmp_path)
    blob.read_at(0, 4 * 65536)
    data_path, map_path = blob.data_path, blob.pmap.path
    cache.release(blob)
    with open(data_path, "r+b") as f:  # a power cut tore chunk 1
        f.seek(65536 + 7)
        f.write(b"\0" * 100)
    raw = bytearray(Path(map_path).read_bytes())
    header = Header.unpack(bytes(raw[:HEADER.size]))
    header.boot_id = bytes(16)  # the map was last trusted under another boot
    raw[:HEADER.size] = header.pack()
    Path(map_path).write_bytes(bytes(raw))
    cache, blob, source = open_blob(image, tmp_path)
    assert [i for i in range(4) if blob.pmap.is_present(i)] == [0, 2, 3]
    assert blob.read_at(0, 4 * 65536) == image["blob_bytes"][:4 * 65536]
    assert source.requests == [(65536, 65536)]
    cache.release(blob)
    cache, blob, source = open_blob(image, tmp_path)  # same boot now: nothing re-verified
    assert source.requests == [] and blob.cached_bytes == 4 * 65536
    cache.release(blob)


def _reader_process(layout_root, state, ref_json, start, results):
    import json as _json

    from erofsd.cache.store import BlobCache
    from erofsd.oci.descriptor import Descriptor
    from erofsd.oci.image import _blob_ref
    from erofsd.oci.layout import OciLayout
    from erofsd.oci.source import LayoutSource
    ref = _blob_ref(Descriptor.from_json(_json.loads(ref_json)), 0)
    source = CountingSource(LayoutSource(OciLayout.open(layout_root)), delay=0.01)
    cache = BlobCache(state, CacheTuning(readahead=0, merge_limit=65536))
    blob = cache.acquire("erofs,shared", ref, [source])
    start.wait()
    data = b"".join(blob.read_at(o, 65536) for o in range(0, ref.data_size, 65536))
    results.put((data, source.fetched))
    cache.release(blob)


def test_processes_share_one_state_dir(image, tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    ref_json = __import__("json").dumps(image["ref"].descriptor.to_json())
    procs = [ctx.Process(target=_reader_process,
                         args=(str(image["layout"].root), str(tmp_path), ref_json, start, results))
             for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    ref = image["ref"]
    for data, _ in outcomes:
        assert data == image["blob_bytes"][:ref.data_size]
    chunk_bytes = sum(fetched for _, fetched in outcomes) - ref.table_size * 3
    assert chunk_bytes <= ref.data_size  # every chunk fetched once across the processes
    assert chunk_bytes == ref.data_size or chunk_bytes >= 0
    (listing,) = BlobCache(tmp_path).list()
    assert listing.blobs[0].cached_bytes == ref.data_size


def test_write_errors_fail_the_read_and_keep_the_cache_usable(image, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(small)], check=True)
    try:
        cache, blob, _ = open_blob(image, small)
        got, failed = 0, 0
        for i in range(10):
            try:
                expected = image["blob_bytes"][i * 65536:(i + 1) * 65536]
                assert blob.read_at(i * 65536, 65536) == expected
                got += 1
            except CacheError as e:
                assert e.errno == 5 and "No space" in str(e)
                failed += 1
        assert got >= 1 and failed >= 1
        present = [i for i in range(10) if blob.pmap.is_present(i)]
        assert len(present) == got  # nothing failed was marked present
        cache.release(blob)
        assert cache.gc().removed  # freeing space...
        cache, blob, _ = open_blob(image, small)  # ...makes it work again
        assert blob.read_at(0, 65536) == image["blob_bytes"][:65536]
        cache.release(blob)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


def test_owned_blob_is_never_written_by_others(image, tmp_path):
    """Another process owns the blob: reads stay right, nothing is stored, no lock is taken."""
    import fcntl
    cache, blob, source = open_blob(image, tmp_path)
    owner = os.open(blob.owner_path, os.O_RDWR | os.O_CREAT, 0o600)
    pid = os.fork()
    if pid == 0:  # the owner: hold the lock until told to stop
        fcntl.flock(os.open(blob.owner_path, os.O_RDWR), fcntl.LOCK_EX)
        os.write(owner, b"x")
        time.sleep(30)
        os._exit(0)
    try:
        while os.path.getsize(blob.owner_path) == 0:
            time.sleep(0.01)
        assert not blob.writable()
        assert blob.read_at(65536 * 2 + 5, 70000) == image["blob_bytes"][65536 * 2 + 5:
                                                                         65536 * 2 + 70005]
        assert blob.cached_bytes == 0  # verified and served, not stored
        with open(blob.data_path, "rb") as f:  # only the chunk table is on disk, no chunk
            assert os.lseek(f.fileno(), 0, os.SEEK_DATA) >= image["ref"].data_size
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(owner)
    assert blob.writable()  # the owner is gone
    blob.read_at(0, 10)
    assert blob.cached_bytes == 65536
    cache.release(blob)
