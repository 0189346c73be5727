"""The snapshotter and the daemon under a running container: kill -9 either, nothing breaks.

Containers depend on neither process: containerd mounted their overlays and
the daemon's holder keeps the fanotify group, so a reader waits through a
dead daemon and gets the right bytes from the next one.
"""

from __future__ import annotations

import hashlib
import subprocess

from daemonutil import wait_until
from erofsd.containerd.pull import containerd_name


def running(node, container: str) -> bool:
    tasks = node.containerd.ctr("task", "ls").stdout
    return any(line.split()[:1] == [container] and "RUNNING" in line
               for line in tasks.splitlines())


def snapshots(node) -> list[str]:
    return sorted(node.containerd.ctr("snapshots", "--snapshotter", "erofsd", "ls")
                  .stdout.splitlines()[1:])


def test_kill_9_of_the_snapshotter_under_a_running_container(node, busybox_images):
    node.pull(busybox_images["a"])
    name = containerd_name(busybox_images["a"])
    node.containerd.run(name, "c1", "sleep", "120", detach=True)
    before = snapshots(node)
    node.snapshotter.kill9()
    big = node.containerd.ctr("task", "exec", "--exec-id", "r1", "c1", "sha256sum",
                              "/usr/share/big").stdout.split()[0]
    assert big == hashlib.sha256(busybox_images["files"]["/usr/share/big"]).hexdigest()
    assert running(node, "c1")
    node.restart_snapshotter()
    assert snapshots(node) == before  # the tree is as it was
    assert node.containerd.run(name, "c2", "cat", "/app/a.txt").stdout == "app a\n"
    assert len(node.daemon.client.status()["mounts"]) == 1  # one mount for both containers


def test_kill_9_of_the_daemon_under_a_running_container(node, busybox_images):
    node.pull(busybox_images["a"])
    name = containerd_name(busybox_images["a"])
    node.containerd.run(name, "c1", "sleep", "120", detach=True)
    node.daemon.kill9()
    reader = subprocess.Popen(
        ["ctr", "--address", node.containerd.address, "task", "exec", "--exec-id", "r1", "c1",
         "sha256sum", "/usr/share/big"], stdout=subprocess.PIPE, text=True)
    node.daemon.start()  # takes its mounts back; the reader's events wait in the holder
    out, _ = reader.communicate(timeout=120)
    assert out.split()[0] == hashlib.sha256(busybox_images["files"]["/usr/share/big"]).hexdigest()
    assert node.daemon.client.status()["daemon"]["fanotify_events"] > 0  # served by the new one
    assert running(node, "c1")
    wait_until(lambda: node.daemon.client.status()["mounts"] != [])
    assert node.containerd.run(name, "c2", "cat", "/etc/motd").stdout.encode() == \
        busybox_images["files"]["/etc/motd"]
