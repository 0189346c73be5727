"""Starting the daemon (daemon/main.py): one per state directory, never over a file, never twice.

A client that finds no daemon answering must not start a second one while
the first is still taking its mounts back: a second daemon would take the
holder (and with it the fanotify group) from the first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from daemonutil import DaemonProc, erofsd_processes, wait_until
from erofsd.daemon.statelock import StateLock
from skips import requires_daemon


def erofsd(*args: str, env: dict | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "erofsd", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@requires_daemon
def test_a_regular_file_at_the_socket_path_is_left_alone(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("do not delete me")
    result = erofsd("daemon", "--socket", precious, "--state-dir", tmp_path / "state")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"erofsd: error: {precious} exists and is not a socket: "
                                     "not replacing it")
    assert precious.read_text() == "do not delete me"


@requires_daemon
def test_a_second_daemon_on_one_state_directory_stops_before_touching_anything(
        daemon, pushed_family, family_snapshots):
    mnt = daemon.mountpoint("a")
    daemon.client.mount(pushed_family["a"], mnt, mode="fanotify", insecure=True)
    holders = erofsd_processes("erofsd.datapaths.holder", str(daemon.state))
    other = str(daemon.root / "other.sock")
    result = erofsd("daemon", "--socket", other, "--state-dir", daemon.state)
    assert result.returncode == 1
    assert f"another erofsd daemon (pid {daemon.process.pid}, socket {daemon.socket})" \
        in result.stderr
    assert not os.path.exists(other)
    assert erofsd_processes("erofsd.datapaths.holder", str(daemon.state)) == holders
    # the first daemon still owns its holder: an uncached file still reads right
    path, entry = next((p, e) for p, e in family_snapshots["a"].items()
                       if e.digest and e.size and e.size > 100_000)
    import hashlib
    with open(mnt + path.decode(), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == entry.digest


@requires_daemon
def test_a_mount_while_the_daemon_starts_never_starts_a_second_one(tmp_path, pushed_family):
    """Race the CLI against a restarting daemon, a few times: exactly one daemon every time."""
    with DaemonProc(tmp_path / "d") as first:
        for i in range(4):
            first.client.mount(pushed_family["a"], first.mountpoint(f"kept{i}"), insecure=True,
                               mode="fuse" if i % 2 else "fanotify", domain_id="race",
                               fsid=f"kept{i}")
        env = {"EROFSD_SOCKET": first.socket}
        lock = StateLock(first.state)
        for round_ in range(3):
            assert erofsd("stop", "--keep-mounts", env=env).returncode == 0
            wait_until(lambda: lock.holder() is None)  # whichever daemon it was, it is gone
            first.start(wait=False)  # taking its four mounts back, while we ask at once
            mount = erofsd("mount", pushed_family["b"], first.mountpoint(f"new{round_}"),
                           "--insecure", "--state-dir", first.state, "--domain-id", "race",
                           "--fsid", f"new{round_}", env=env)
            assert mount.returncode == 0, mount.stderr
            status = first.client.status()
            assert erofsd_processes("erofsd daemon", str(first.state)) == \
                [status["daemon"]["pid"]]
            assert len(erofsd_processes("erofsd.datapaths.holder", str(first.state))) == 1
            if "started the erofsd daemon" in mount.stderr:
                # the CLI asked before our daemon even took the lock: the two raced for
                # it, ours lost and went before touching anything
                assert first.process.wait(timeout=30) == 1
            else:
                assert status["daemon"]["pid"] == first.process.pid
            assert len(status["mounts"]) == 5 + round_



@requires_daemon
def test_the_log_has_a_line_per_mount_not_one_per_request_to_the_registry(tmp_path,
                                                                           pushed_family):
    """A library that logs each request at INFO would write a line per cache miss."""
    with DaemonProc(tmp_path / "d") as daemon:
        mnt = daemon.mountpoint("m")
        daemon.client.mount(pushed_family["a"], mnt, insecure=True)
        read = subprocess.run(["sh", "-c", f"tar cf - -C {mnt} . | wc -c"], check=True,
                              capture_output=True, text=True)
        assert int(read.stdout) > 0
        fetched = sum(c["fetched_bytes"] for c in daemon.client.status()["cookies"])
        assert fetched > 0  # the read went to the registry
        daemon.client.umount(mnt)
    loggers = {json.loads(line)["logger"] for line in daemon.log.read_text().splitlines()
               if line.startswith("{")}
    assert "erofsd.daemon" in loggers
    assert all(name.startswith("erofsd.") for name in loggers), loggers
