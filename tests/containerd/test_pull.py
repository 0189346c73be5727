"""``erofsd containerd pull`` and ``ctr run``: containers from lazily mounted erofsd images.

A real containerd and runc, the erofsd snapshotter and daemon, a real
registry (its access log tells who fetched what), all on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json

from erofsd.containerd.pull import chain_ids, containerd_name
from erofsd.kernel.mount import mounted_filesystems, parse_mountinfo


def test_chain_ids_and_names_are_containerds():
    a, b, c = ("sha256:" + x * 64 for x in "abc")
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()  # the OCI image spec's
    assert chain_ids([a, b, c]) == [a, ab, "sha256:" + hashlib.sha256(f"{ab} {c}".encode())
                                    .hexdigest()]
    assert containerd_name("docker://127.0.0.1:5000/team/web:v1") == "127.0.0.1:5000/team/web:v1"
    assert containerd_name("docker://python:3.11") == "docker.io/library/python:3.11"


def test_a_converted_image_runs_with_no_layer_fetched_by_containerd(node, registry,
                                                                     busybox_images):
    pulled = json.loads(node.pull(busybox_images["a"], "--json").stdout)
    assert pulled["prepared"] == pulled["layers"] == 3  # two blobs and the bootstrap
    (mount,) = pulled["mounts"]
    assert mount["domain_id"] == "node" and mount["mode"] == "fanotify"
    name = containerd_name(busybox_images["a"])
    assert node.containerd.run(name, "c1", "cat", "/etc/motd").stdout.encode() == \
        busybox_images["files"]["/etc/motd"]
    assert registry.blob_gets("ctd/busy", agent="containerd") == []  # no layer, no config
    # a container's root is an overlay whose only lower is the erofsd mount
    node.containerd.run(name, "c2", "sleep", "60", detach=True)
    info = parse_mountinfo(open("/proc/self/mountinfo").read())
    rootfs = node.containerd.rootfs("c2")
    assert info[rootfs] == "overlay" and mounted_filesystems()[mount["mountpoint"]] == "erofs"
    options = next(line for line in open("/proc/self/mountinfo")
                   if f" {rootfs} " in line).split(" - ")[1]
    assert f"lowerdir={mount['mountpoint']}," in options + ","
    big = node.containerd.ctr("task", "exec", "--exec-id", "e1", "c2", "sha256sum",
                              "/usr/share/big").stdout.split()[0]
    assert big == hashlib.sha256(busybox_images["files"]["/usr/share/big"]).hexdigest()
