"""The daemon under faults: a registry that goes down, a daemon killed mid-read,
a dead FUSE worker, restarts, storms of requests, and bad requests."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import stat
import subprocess
import sys
import threading
import time

import pytest

from daemonutil import exchange, post, sweep, wait_until
from erofsd.daemon.client import DaemonClient
from erofsd.daemon.statelock import StateLock
from erofsd.errors import (
    AlreadyExists,
    BadReference,
    Busy,
    ErofsdError,
    InvalidArgument,
    InvalidName,
    NotFound,
)
from skips import requires_daemon
from treeutil import assert_same_tree, snapshot_dir

MODES = ["fanotify", "fuse"]

READER = r"""
import hashlib, json, os, sys
root = sys.argv[1]
out = {}
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as f:
                out["/" + os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            out["/" + os.path.relpath(path, root)] = f"errno {e.errno}"
print(json.dumps(out))
"""


def expected_digests(snapshot) -> dict:
    return {p.decode(): e.digest for p, e in snapshot.items() if e.digest is not None}


@pytest.mark.parametrize("mode", MODES)
def test_registry_down_mid_read_gives_eio_then_recovers(daemon, pushed_family, family_snapshots,
                                                         proxy, mode):
    ref = proxy.route(pushed_family["a"])
    mnt = daemon.mountpoint("a")
    daemon.client.mount(ref, mnt, mode=mode, insecure=True)
    files = sorted(p.decode() for p, e in family_snapshots["a"].items()
                   if e.digest and e.size and e.size > 5000)
    first, second = files[0], files[-1]
    with open(mnt + first, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == family_snapshots["a"][first.encode()].digest
    proxy.rate, proxy.weights = 1.0, {"http500": 1}  # the registry is down
    with pytest.raises(OSError) as info, open(mnt + second, "rb") as f:
        f.read()
    assert info.value.errno in (errno.EIO, errno.ENOTCONN)
    proxy.rate = 0.0  # back up: the same file now reads right
    with open(mnt + second, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == \
            family_snapshots["a"][second.encode()].digest
    assert_same_tree(snapshot_dir(mnt), family_snapshots["a"])


def test_kill_9_mid_read_loses_no_read_and_no_byte(daemon, pushed_family, family_snapshots,
                                                    registry, proxy):
    """fanotify: the holder keeps pending events; each new daemon answers them.

    Every round reads a cold volume through a slow registry and kills the
    daemon while the reader is in the middle of it.
    """
    proxy.delay = 0.15  # every fetch is slow, so reads are in flight when the daemon dies
    ref = proxy.route(pushed_family["b"])
    expected = expected_digests(family_snapshots["b"])
    rng = random.Random(4)
    for round_ in range(4):
        mnt = daemon.mountpoint(f"b{round_}")
        daemon.client.mount(ref, mnt, mode="fanotify", insecure=True, domain_id=f"k{round_}")
        events = daemon.client.status()["daemon"]["fanotify_events"]
        reader = subprocess.Popen([sys.executable, "-c", READER, mnt], stdout=subprocess.PIPE)
        daemon.wait_for(lambda s, seen=events: s["daemon"]["fanotify_events"] >= seen + 2)
        assert reader.poll() is None, "the reader finished before the kill"
        daemon.kill9()
        time.sleep(rng.uniform(0.05, 0.5))  # the outage itself: readers wait in the holder
        daemon.start()
        assert mnt in [m["mountpoint"] for m in daemon.client.status()["mounts"]]
        out, _ = reader.communicate(timeout=300)
        assert json.loads(out) == expected, f"round {round_}"
        daemon.client.umount(mnt)


def test_dead_fuse_worker_gives_enotconn_and_can_be_recovered(daemon, pushed_family,
                                                               family_snapshots):
    mnt = daemon.mountpoint("a")
    view = daemon.client.mount(pushed_family["a"], mnt, mode="fuse", insecure=True)
    os.kill(view["worker_pid"], 9)
    daemon.wait_for(lambda s: s["mounts"][0]["state"] == "broken")
    with pytest.raises(OSError) as info:
        os.listdir(mnt)
    assert info.value.errno in (errno.ENOTCONN, errno.EIO)
    daemon.client.umount(mnt)  # the documented recovery: unmount, then mount again
    daemon.client.mount(pushed_family["a"], mnt, mode="fuse", insecure=True)
    assert_same_tree(snapshot_dir(mnt), family_snapshots["a"])


@pytest.mark.parametrize("mode", MODES)
def test_restart_finds_mounts_again(daemon, pushed_family, family_snapshots, mode):
    mnt = daemon.mountpoint("a")
    daemon.client.mount(pushed_family["a"], mnt, mode=mode, insecure=True, domain_id="r")
    half = [p for p, e in family_snapshots["a"].items() if e.digest][: 20]
    for path in half:
        with open(mnt + path.decode(), "rb") as f:
            f.read()
    result = daemon.cli("stop", "--keep-mounts", check=True)
    assert b"left mounted for the next daemon" in result.stdout
    daemon.wait_exit()
    daemon.start()
    (mount,) = daemon.client.status()["mounts"]
    assert (mount["mountpoint"], mount["mode"], mount["domain_id"]) == (mnt, mode, "r")
    assert_same_tree(snapshot_dir(mnt), family_snapshots["a"])
    status = daemon.client.status()
    assert all(c["refcount"] == 1 for c in status["cookies"]) and len(status["cookies"]) == 2


def test_stop_unmounts_idle_mounts_and_refuses_while_busy(daemon, pushed_family):
    idle, busy = daemon.mountpoint("idle"), daemon.mountpoint("busy")
    daemon.client.mount(pushed_family["a"], idle, insecure=True, domain_id="s")
    daemon.client.mount(pushed_family["b"], busy, insecure=True, domain_id="s")
    holder = os.open(busy, os.O_RDONLY)  # a process works in it
    try:
        result = daemon.cli("stop")
        assert result.returncode == 1 and b"still busy" in result.stderr
        assert [m["mountpoint"] for m in daemon.client.status()["mounts"]] == [busy]
    finally:
        os.close(holder)
    assert b"nothing left mounted" in daemon.cli("stop", check=True).stdout
    assert daemon.wait_exit() == 0
    assert not os.path.ismount(busy) and not os.path.ismount(idle)


def test_sigterm_stops_cleanly(daemon, pushed_family):
    mnt = daemon.mountpoint("a")
    daemon.client.mount(pushed_family["a"], mnt, insecure=True)
    daemon.process.terminate()
    assert daemon.wait_exit() == 0
    assert not os.path.ismount(mnt)
    assert not os.path.exists(daemon.socket)


def test_storm_of_mounts_and_unmounts_in_one_domain(daemon, pushed_family):
    client = daemon.client
    points = [daemon.mountpoint(f"m{i}") for i in range(6)]
    refs = [pushed_family["a"], pushed_family["b"]]
    errors: list[BaseException] = []
    done = {"mounted": 0, "unmounted": 0, "refused": 0}
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        from erofsd.daemon.client import DaemonClient
        own = DaemonClient(daemon.socket)
        for _ in range(8):
            point = rng.choice(points)
            try:
                if rng.random() < 0.6:
                    own.mount(rng.choice(refs), point, domain_id="storm", insecure=True,
                              fsid=f"f{points.index(point)}")
                    key = "mounted"
                else:
                    own.umount(point)
                    key = "unmounted"
            except (Busy, AlreadyExists, NotFound):
                key = "refused"
            except BaseException as e:
                errors.append(e)
                continue
            with lock:
                done[key] += 1
        own.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert done["mounted"] >= 5 and done["refused"] >= 1
    status = client.status()
    users: dict = {}
    for m in status["mounts"]:
        assert os.path.ismount(m["mountpoint"])
        for blob in m["blobs"]:
            users[blob] = users.get(blob, 0) + 1
    assert {c["blob"]: c["refcount"] for c in status["cookies"]} == users
    if status["mounts"]:
        (domain,) = status["domains"]
        assert {k: domain[k] for k in ("domain_id", "mounts", "cookies", "refcount")} == \
            {"domain_id": "storm", "mounts": len(status["mounts"]), "cookies": len(users),
             "refcount": len(status["mounts"]) + len(users)}
        assert domain["fetched_bytes"] == sum(c["fetched_bytes"] for c in status["cookies"])
    for m in status["mounts"]:
        client.umount(m["mountpoint"])
    assert client.status()["cookies"] == [] and client.status()["domains"] == []


def test_bad_requests_change_nothing(daemon, pushed_family, tmp_path):
    client = daemon.client
    good = daemon.mountpoint("good")
    client.mount(pushed_family["a"], good, insecure=True, domain_id="bad")
    before = client.status()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (dict(image="nonsense", mountpoint=daemon.mountpoint("x")), BadReference,
         "unknown image reference"),
        (dict(image=f"oci:{tmp_path}/nowhere", mountpoint=daemon.mountpoint("x")), NotFound,
         "no such image layout"),
        (dict(image=pushed_family["a"], mountpoint=good, domain_id="other"), Busy,
         "already a mount point"),
        (dict(image=pushed_family["a"], mountpoint="relative/path"), InvalidArgument,
         "absolute"),
        (dict(image=pushed_family["a"], mountpoint=str(a_file)), ErofsdError, "not a directory"),
        (dict(image=pushed_family["a"], mountpoint=daemon.mountpoint("x"), fsid="a/b"),
         InvalidName, "must not contain"),
        (dict(image=pushed_family["a"], mountpoint=daemon.mountpoint("x"), domain_id="a,b"),
         InvalidName, "must not contain"),
        (dict(image=pushed_family["a"], mountpoint=daemon.mountpoint("x"), mode="magic"),
         InvalidArgument, "unknown mode"),
        (dict(image=pushed_family["a"], mountpoint=str(daemon.state / "cache")),
         InvalidArgument, "inside the daemon's state directory"),
        (dict(image=pushed_family["a"], mountpoint=str(daemon.state)),
         InvalidArgument, "inside the daemon's state directory"),
        (dict(image=pushed_family["a"], mountpoint=str(daemon.root)),
         InvalidArgument, "would hide the daemon's state directory"),
    ]
    for fields, error, message in cases:
        image, mountpoint = fields.pop("image"), fields.pop("mountpoint")
        with pytest.raises(error, match=message):
            client.mount(image, mountpoint, insecure=True, **fields)
    with pytest.raises(NotFound, match="not mounted by erofsd"):
        client.umount(daemon.mountpoint("never"))
    point = daemon.mountpoint("raw").encode()
    for body, message in [  # bodies no well-behaved client sends, straight to the socket
        (b'{"image": 7, "mountpoint": "%s"}' % point, "image must be a string"),
        (b'{"image": "\\ud800", "mountpoint": "%s"}' % point, "not valid Unicode"),
        (b'{"image": "x\\u0000", "mountpoint": "%s"}' % point, "must not contain NUL"),
        (b'{"image": "oci:/x", "mountpoint": "%s", "insecure": "yes"}' % point,
         "insecure must be true or false"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    ]:
        status, answer = post(daemon.socket, "/v1/mounts", body)
        assert (status, answer["type"]) == (400, "InvalidRequest"), answer
        assert message in answer["error"]
    status, _, _, _ = exchange(daemon.socket, b"POST /v1/mounts HTTP/1.1\r\nHost: e\r\n"
                                              b"Content-Length: 99999999999\r\n\r\n")
    assert status == 413
    after = client.status()
    assert (after["mounts"], after["domains"], after["cookies"]) == \
        (before["mounts"], before["domains"], before["cookies"])
    result = daemon.cli("mount", pushed_family["a"], daemon.mountpoint("y"), "--domain-id",
                        "x/y", "--insecure")
    assert result.returncode == 1 and b"Traceback" not in result.stderr
    assert result.stderr.decode().strip().startswith("erofsd: error: invalid domain_id")


@requires_daemon
def test_socket_is_root_only_and_mount_starts_a_daemon(tmp_path, pushed_family):
    socket_path = tmp_path / "run" / "erofsd.sock"
    env = {**os.environ, "EROFSD_SOCKET": str(socket_path)}
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run([sys.executable, "-m", "erofsd", "mount", pushed_family["a"],
                             str(mnt), "--insecure", "--state-dir", str(tmp_path / "state")],
                            capture_output=True, env=env, timeout=120)
    try:
        assert result.returncode == 0, result.stderr
        assert b"started the erofsd daemon" in result.stderr
        st = os.stat(socket_path)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    finally:
        client = DaemonClient(str(socket_path))
        with contextlib.suppress(ErofsdError):
            client.stop()
        client.close()
        wait_until(lambda: StateLock(tmp_path / "state").holder() is None)  # it has exited
        sweep(tmp_path, tmp_path / "state")


@pytest.mark.parametrize("damaged", ["bootstrap", "chunk table"])
def test_a_mount_whose_bootstrap_or_table_is_damaged_takes_nothing(daemon, tmp_path, damaged):
    """The bootstrap is fetched while the registration opens the blobs: whichever of the
    two fails, the other is undone (no cookie, no domain, no fd left open)."""
    from builds import build_layers
    from erofsd.errors import IntegrityError
    from erofsd.images import open_image
    from erofsd.oci.layout import OciLayout

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file").write_bytes(os.urandom(200_000))
    layout = tmp_path / "layout"
    build_layers([tree], layout, tag="t")
    with open_image(f"oci:{layout}:t") as opened:
        bootstrap, (blob,) = opened.manifest.bootstrap, opened.manifest.blobs
    digest, offset = (bootstrap.digest, 0) if damaged == "bootstrap" else \
        (blob.digest, blob.table_location[1])
    path = OciLayout.open(layout).blob_path(digest)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    def state_files() -> list[str]:  # what the daemon holds open of its state
        fds = f"/proc/{daemon.process.pid}/fd"
        return sorted(target for fd in os.listdir(fds)
                      if (target := os.readlink(f"{fds}/{fd}")).startswith(str(daemon.state)))

    before = state_files()
    with pytest.raises(IntegrityError):
        daemon.client.mount(f"oci:{layout}:t", daemon.mountpoint("m"), domain_id="d1")
    status = daemon.client.status()
    assert (status["mounts"], status["domains"], status["cookies"]) == ([], [], [])
    assert state_files() == before
