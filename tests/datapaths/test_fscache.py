"""The fscache data path against a real 6.1 kernel in qemu (EROFS over fscache on-demand).

The seed's own quick-test cases: one guest boot runs them all in turn
(guest_scenarios.py, one daemon each), and each test here checks one. The
guest's erofs and cachefiles dmesg lines are printed so a failure explains
itself. `pytest -m fscache` runs exactly these.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

import guest
from builds import build_layers
from cachekit import text
from erofsd.erofs import codec
from erofsd.images import open_image
from erofsd.oci.layout import OciLayout
from sharekit import common_bytes, two_images
from treeutil import snapshot_image

pytestmark = [pytest.mark.fscache,
              pytest.mark.skipif(guest.unavailable() is not None,
                                 reason=guest.unavailable() or "")]
TESTS = Path(__file__).resolve().parent.parent  # the helpers and guest_scenarios.py


def _digests(ref: str) -> dict[str, str]:
    with open_image(ref) as opened:
        return {p.decode(): e.digest for p, e in snapshot_image(opened.image).items()
                if e.digest is not None}


def _spec(work: Path) -> dict:
    rng = random.Random(8)
    base, app1, app2, big, bad = (work / n for n in ("base", "app1", "app2", "big", "bad"))
    for d in (base, app1, app2, big, bad):
        d.mkdir(parents=True)
    for i in range(30):  # compressed frames (zstd) and frames that stay raw, both
        (base / f"lib{i}").write_bytes(text(i, rng.randrange(1, 150_000)) if i % 2 else
                                       rng.randbytes(rng.randrange(1, 150_000)))
    (app1 / "one").write_bytes(b"app one\n")
    (app2 / "two").write_bytes(b"app two\n")
    (big / "big").write_bytes(rng.randbytes(48 << 20))
    (bad / "broken").write_bytes(rng.randbytes(300_000))
    (bad / "fine").write_bytes(rng.randbytes(5000))
    layout = work / "images"
    build_layers([base, app1], layout, tag="a", chunk_size=64 * 1024)
    build_layers([base, app2], layout, tag="b", chunk_size=64 * 1024)
    build_layers([big], layout, tag="big", chunk_size=1 << 20)
    build_layers([bad], work / "badimages", tag="bad", chunk_size=64 * 1024)
    with open_image(f"oci:{layout}:a") as opened:
        base_hex = opened.manifest.blobs[0].digest.split(":", 1)[1]
        codecs = {f.codec for f in opened.chunk_tables()[0].frames}
        assert codecs == {codec.RAW, codec.ZSTD}
    with open_image(f"oci:{work / 'badimages'}:bad") as opened:  # corrupt one chunk of "broken"
        img = opened.image
        extent = img.map(img.lookup("/broken"), 70_000)
        table = opened.chunk_tables()[extent.device - 1]
        frame = table.frames[table.frame_of(table.covering(extent.physical,
                                                           extent.physical + 1).start)]
        blob = OciLayout.open(work / "badimages").blob_path(
            opened.manifest.blobs[extent.device - 1].digest)
    data = bytearray(blob.read_bytes())
    data[frame.stored_offset] ^= 0xFF
    blob.write_bytes(bytes(data))
    (work / "apart").mkdir()
    apart = two_images(work / "apart")
    return {
        "images": {"a": f"oci:{layout}:a", "b": f"oci:{layout}:b"},
        "expected": {t: _digests(f"oci:{layout}:{t}") for t in ("a", "b")},
        "base": base_hex,
        "big": {"image": f"oci:{layout}:big", "path": "/big",
                "digest": hashlib.sha256((big / "big").read_bytes()).hexdigest()},
        "bad": {"image": f"oci:{work / 'badimages'}:bad", "broken": "/broken", "fine": "/fine",
                "fine_digest": hashlib.sha256((bad / "fine").read_bytes()).hexdigest()},
        "apart": {"images": {"a": apart[0], "b": apart[1]},
                  "expected": {"a": _digests(apart[0]), "b": _digests(apart[1])},
                  "shared": common_bytes(work / "apart")},
    }


@pytest.fixture(scope="module")
def findings(tmp_path_factory):
    images = guest.images()
    work = tmp_path_factory.mktemp("guest")
    os.chmod(work, 0o755)
    spec = _spec(work)
    (work / "spec.json").write_text(json.dumps(spec))
    python = Path(os.sys.executable)
    command = (f"export PYTHONPATH={TESTS}\n"
               f"exec {python} {TESTS / 'guest_scenarios.py'} {work / 'spec.json'}\n")
    result = guest.run(command, work, images=images)
    print("\n--- guest dmesg (erofs, cachefiles) ---")
    print("\n".join(result.dmesg_lines("erofs", "cachefiles", "fscache")[-60:]))
    assert result.rc == 0, f"guest failed (rc {result.rc}):\n{result.output[-4000:]}\n" \
                           f"{result.console[-2000:]}"
    report = json.loads(result.output.strip().splitlines()[-1])
    return report, result


def _scenario(findings, name: str) -> dict:
    report, _ = findings
    found = report[name]
    assert "error" not in found, found["error"]
    return found


def test_one_open_for_a_blob_shared_in_a_domain(findings):
    found = _scenario(findings, "shared_domain")
    assert found["mode"] == "fscache"
    assert found["files_equal"]
    assert found["base_opens"] == 1  # the kernel shared the cookie: one OPEN for both images
    assert found["volumes"] == ["erofs,d1"] and found["base_refcount"] == 2


def test_same_fsid_twice_in_a_domain_is_eexist(findings):
    found = _scenario(findings, "same_fsid_twice")
    assert found["errno"] == 17, found  # the daemon's registry, before the kernel is asked
    assert found["mounts"] == 1
    assert found["kernel_errno"] == 17, found  # and the kernel's own domain code
    _, result = findings
    assert result.dmesg_lines("already exists in domain"), "no EEXIST line in dmesg"


def test_no_domain_means_one_volume_per_image(findings):
    found = _scenario(findings, "no_domain")
    assert found["files_equal"]
    assert found["volumes"] == ["erofs,a1", "erofs,b1"]
    assert found["base_opens"] == 2  # the blob is opened once per image


def test_unmount_closes_and_a_remount_reads_the_cache_files(findings):
    found = _scenario(findings, "unmount_and_remount")
    assert found["files_equal"] and found["registry_empty"]
    assert found["objects_after_unmount"] == 0  # every object CLOSEd
    assert found["reads_after_remount"] == found["reads_before"]  # no READ: all cached


def test_failover_after_kill_9_completes_the_read(findings):
    found = _scenario(findings, "failover")
    assert found["in_flight"], "the read finished before the daemon was killed"
    assert found["rc"] == 0 and found["digest_ok"]


def test_a_source_fault_gives_eio_not_zeros(findings):
    found = _scenario(findings, "source_fault")
    assert found["broken"]["errno"] == 5  # EIO
    assert found["fine_ok"] and found["failed_reads"] >= 1


def test_chunks_two_images_built_apart_hold_are_fetched_once(findings):
    found = _scenario(findings, "chunks_shared")
    shared = found["shared"]  # bytes of the files both hold
    assert found["a"]["files_equal"] and found["b"]["files_equal"]
    assert found["a"]["local"] == 0
    assert found["b"]["local"] >= shared
    assert found["b"]["fetched"] <= found["b"]["data_size"] - shared
