"""The fscache scenarios, run inside the qemu guest against the 6.1 kernel.

``python guest_scenarios.py SPEC.json`` runs each scenario in turn (one
daemon each: /dev/cachefiles is exclusive) and prints one JSON object of
findings; the tests on the host assert on them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from daemonutil import DaemonProc
from erofsd.errors import ErofsdError
from erofsd.kernel.mount import mount_erofs_ondemand

CACHE = Path("/run/cache")
READ_ONE = ("import hashlib, sys\n"
            "with open(sys.argv[1], 'rb') as f:\n"
            "    print(hashlib.sha256(f.read()).hexdigest())\n")


def digests(root: str) -> dict[str, str]:
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                found["/" + os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


@contextlib.contextmanager
def daemon(name: str) -> Iterator[DaemonProc]:
    """A daemon of its own, cleaned up after; waits while the last one still holds
    /dev/cachefiles."""
    last: Exception | None = None
    for _ in range(40):
        try:
            d = DaemonProc(CACHE / name)
            break
        except RuntimeError as e:
            last = e
            time.sleep(0.5)
    else:
        raise RuntimeError(f"no daemon: {last}")
    with d:
        yield d


def opens_of(status: dict, key: str) -> int:
    return sum(1 for o in status["daemon"]["fscache"]["opens"] if o["key"] == key)


def shared_domain(spec: dict) -> dict:
    with daemon("shared") as d:
        a = d.client.mount(spec["images"]["a"], d.mountpoint("a"), fsid="a1", domain_id="d1",
                           mode="fscache")
        d.client.mount(spec["images"]["b"], d.mountpoint("b"), fsid="b1", domain_id="d1",
                       mode="fscache")
        same = (digests(d.mountpoint("a")) == spec["expected"]["a"]
                and digests(d.mountpoint("b")) == spec["expected"]["b"])
        status = d.client.status()
        return {"mode": a["mode"], "files_equal": same,
                "base_opens": opens_of(status, spec["base"]),
                "volumes": sorted({c["volume"] for c in status["cookies"]}),
                "base_refcount": next(c["refcount"] for c in status["cookies"]
                                      if c["blob"] == "sha256:" + spec["base"])}


def same_fsid_twice(spec: dict) -> dict:
    """The daemon refuses before it takes anything; the kernel refuses on its own too."""
    with daemon("eexist") as d:
        d.client.mount(spec["images"]["a"], d.mountpoint("a"), fsid="a1", domain_id="d1",
                       mode="fscache")
        found: dict = {}
        try:
            d.client.mount(spec["images"]["a"], d.mountpoint("again"), fsid="a1",
                           domain_id="d1", mode="fscache")
            found["errno"] = 0
        except ErofsdError as e:
            found.update(errno=e.errno, message=str(e), mounts=len(d.client.status()["mounts"]))
        try:  # straight to the kernel, past the daemon's registry
            mount_erofs_ondemand(d.mountpoint("direct"), "a1", "d1")
            found["kernel_errno"] = 0
        except OSError as e:
            found["kernel_errno"] = e.errno
        return found


def no_domain(spec: dict) -> dict:
    with daemon("private") as d:
        d.client.mount(spec["images"]["a"], d.mountpoint("a"), fsid="a1", mode="fscache")
        d.client.mount(spec["images"]["b"], d.mountpoint("b"), fsid="b1", mode="fscache")
        same = (digests(d.mountpoint("a")) == spec["expected"]["a"]
                and digests(d.mountpoint("b")) == spec["expected"]["b"])
        status = d.client.status()
        return {"files_equal": same, "base_opens": opens_of(status, spec["base"]),
                "volumes": sorted({c["volume"] for c in status["cookies"]})}


def unmount_and_remount(spec: dict) -> dict:
    with daemon("remount") as d:
        mnt = d.mountpoint("a")
        d.client.mount(spec["images"]["a"], mnt, fsid="a1", domain_id="d1", mode="fscache")
        first = digests(mnt)
        reads_before = d.client.status()["daemon"]["fscache"]["reads"]
        d.client.umount(mnt)
        # CLOSE messages arrive after the unmount returns
        empty = d.wait_for(lambda s: s["daemon"]["fscache"]["objects"] == 0)
        d.client.mount(spec["images"]["a"], mnt, fsid="a1", domain_id="d1", mode="fscache")
        second = digests(mnt)
        after = d.client.status()["daemon"]["fscache"]
        return {"files_equal": first == second == spec["expected"]["a"],
                "registry_empty": not (empty["mounts"] or empty["domains"] or empty["cookies"]),
                "objects_after_unmount": empty["daemon"]["fscache"]["objects"],
                "reads_before": reads_before, "reads_after_remount": after["reads"]}


def failover(spec: dict) -> dict:
    with daemon("failover") as d:
        mnt = d.mountpoint("big")
        d.client.mount(spec["big"]["image"], mnt, fsid="big", mode="fscache")
        reader = subprocess.Popen([sys.executable, "-c", READ_ONE, mnt + spec["big"]["path"]],
                                  stdout=subprocess.PIPE, text=True)
        d.wait_for(lambda s: s["daemon"]["fscache"]["reads"] >= 3)  # the read is under way
        in_flight = reader.poll() is None
        d.kill9()
        d.start()  # takes /dev/cachefiles back from the holder and writes "restore"
        out, _ = reader.communicate(timeout=900)
        return {"in_flight": in_flight, "rc": reader.returncode,
                "digest_ok": out.strip() == spec["big"]["digest"]}


def source_fault(spec: dict) -> dict:
    with daemon("fault") as d:
        mnt = d.mountpoint("bad")
        d.client.mount(spec["bad"]["image"], mnt, fsid="bad", mode="fscache")
        try:
            with open(mnt + spec["bad"]["broken"], "rb") as f:
                data = f.read()
            broken = {"errno": 0, "zeros": data.count(0) == len(data)}
        except OSError as e:
            broken = {"errno": e.errno}
        with open(mnt + spec["bad"]["fine"], "rb") as f:
            fine_ok = hashlib.sha256(f.read()).hexdigest() == spec["bad"]["fine_digest"]
        return {"broken": broken, "fine_ok": fine_ok,
                "failed_reads": d.client.status()["daemon"]["fscache"]["failed_reads"]}


def chunks_shared(spec: dict) -> dict:
    """Two images built apart (no blob in common) in one domain: the kernel shares no
    cookie, the daemon's cache fills the second's common chunks from the first's."""
    apart = spec["apart"]
    with daemon("chunks") as d:
        found: dict = {"shared": apart["shared"]}
        for tag in ("a", "b"):
            mnt = d.mountpoint("apart-" + tag)
            view = d.client.mount(apart["images"][tag], mnt, fsid="apart-" + tag,
                                  domain_id="d2", mode="fscache")
            same = digests(mnt) == apart["expected"][tag]
            (cookie,) = [c for c in d.client.status()["cookies"]
                         if c["blob"] == view["blobs"][0]]
            found[tag] = {"files_equal": same, "fetched": cookie["fetched_bytes"],
                          "local": cookie["filled_locally_bytes"],
                          "data_size": cookie["data_size"]}
        return found


SCENARIOS = [shared_domain, same_fsid_twice, no_domain, unmount_and_remount, failover,
             source_fault, chunks_shared]


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    findings = {}
    for scenario in SCENARIOS:
        started = time.monotonic()
        try:
            findings[scenario.__name__] = scenario(spec)
        except Exception:
            findings[scenario.__name__] = {"error": traceback.format_exc()}
        findings[scenario.__name__]["seconds"] = round(time.monotonic() - started, 1)
        print(f"scenario {scenario.__name__} done", file=sys.stderr, flush=True)
    print(json.dumps(findings))


if __name__ == "__main__":
    assert errno.EEXIST == 17
    main()
