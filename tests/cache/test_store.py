"""The blob cache of a state directory: one object per (volume, blob), listing, GC."""

from __future__ import annotations

import os
import subprocess
import sys

from cachekit import CountingSource, open_blob
from erofsd.cache.blob import CacheTuning
from erofsd.cache.presentmap import PresentMap
from erofsd.cache.store import BlobCache
from erofsd.oci.source import LayoutSource


def test_same_volume_and_blob_is_one_object(image, tmp_path):
    cache = BlobCache(tmp_path)
    s1 = CountingSource(LayoutSource(image["layout"]))
    s2 = CountingSource(LayoutSource(image["layout"]))
    a = cache.acquire("erofs,t", image["ref"], [s1])
    b = cache.acquire("erofs,t", image["ref"], [s2])
    c = cache.acquire("erofs,other", image["ref"], [s1])
    assert a is b and a is not c
    cache.release(a)
    assert b.read_at(0, 10)  # still open: one reference left
    cache.release(b)
    cache.release(c)


def test_gc_spares_blobs_in_use_and_goes_lru(image, tmp_path):
    cache = BlobCache(tmp_path, CacheTuning(readahead=0))
    src = LayoutSource(image["layout"])
    blobs = {}
    for i, volume in enumerate(["erofs,old", "erofs,mid", "erofs,new", "erofs,busy"]):
        blobs[volume] = cache.acquire(volume, image["ref"], [src])
        blobs[volume].read_at(0, 65536 * (i + 1))
    for used, volume in enumerate(["erofs,old", "erofs,mid", "erofs,new"]):
        cache.release(blobs[volume])
        map_path = blobs[volume].data_path + ".map"  # last_used: seconds; set, not waited for
        PresentMap.from_fd(map_path, os.open(map_path, os.O_RDWR)).update_header(
            last_used=1_000_000 + used)
    total = sum(b.disk_bytes for v in cache.list() for b in v.blobs)
    keep = total - 1  # just under: only the oldest has to go
    report = cache.gc(max_size=keep)
    assert report.removed == [f"erofs,old {image['ref'].digest}"]
    report = cache.gc()
    assert sorted(r.split()[0] for r in report.removed) == ["erofs,mid", "erofs,new"]
    assert report.kept_in_use == 1
    assert [v.volume for v in cache.list()] == ["erofs,busy"]
    assert blobs["erofs,busy"].read_at(0, 10) == image["blob_bytes"][:10]
    cache.release(blobs["erofs,busy"])
    assert cache.gc().removed and cache.list() == []


def test_gc_and_ls_step_over_stray_files_in_the_cache_root(image, tmp_path):
    cache, blob, _ = open_blob(image, tmp_path)
    blob.read_at(0, 65536)
    cache.release(blob)
    stray = tmp_path / "cache" / "notes.txt"
    stray.write_text("not a volume")
    assert [v.volume for v in cache.list()] == [blob.volume]
    report = cache.gc()
    assert report.removed == [f"{blob.volume} {image['ref'].digest}"]
    assert stray.read_text() == "not a volume" and cache.list() == []


def test_gc_in_another_process_respects_our_use(image, tmp_path):
    cache, blob, _ = open_blob(image, tmp_path)
    blob.read_at(0, 65536)
    out = subprocess.run([sys.executable, "-m", "erofsd", "cache", "gc", "--json",
                          "--state-dir", str(tmp_path)], capture_output=True, text=True)
    assert '"kept_in_use": 1' in out.stdout, out.stderr
    assert os.path.exists(blob.data_path)
    cache.release(blob)
