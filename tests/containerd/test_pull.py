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
    before = len(registry.blob_gets("ctd/busy", agent="containerd"))  # by other tests
    pulled = json.loads(node.pull(busybox_images["a"], "--json").stdout)
    assert pulled["prepared"] == pulled["layers"] == 3  # two blobs and the bootstrap
    (mount,) = pulled["mounts"]
    assert mount["domain_id"] == "node" and mount["mode"] == "fanotify"
    name = containerd_name(busybox_images["a"])
    assert node.containerd.run(name, "c1", "cat", "/etc/motd").stdout.encode() == \
        busybox_images["files"]["/etc/motd"]
    assert registry.blob_gets("ctd/busy", agent="containerd")[before:] == []  # no layer/config
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


def test_two_images_on_one_base_share_it_in_the_node_domain(node, busybox_images):
    names = [containerd_name(busybox_images[tag]) for tag in ("a", "b")]
    for tag in ("a", "b"):
        node.pull(busybox_images[tag])
    for i, name in enumerate(names):  # two containers at once, each reading all of base
        node.containerd.run(name, f"c{i}", "sleep", "60", detach=True)
    for i in range(2):
        out = node.containerd.ctr("task", "exec", "--exec-id", f"r{i}", f"c{i}", "sha256sum",
                                  "/usr/share/big").stdout
        assert out.split()[0] == hashlib.sha256(
            busybox_images["files"]["/usr/share/big"]).hexdigest()
        assert node.containerd.ctr("task", "exec", "--exec-id", f"a{i}", f"c{i}", "cat",
                                   f"/app/{'ab'[i]}.txt").stdout == f"app {'ab'[i]}\n"
    status = node.daemon.client.status()
    assert [d["domain_id"] for d in status["domains"]] == ["node"]
    (base,) = [c for c in status["cookies"] if c["blob"] == busybox_images["base"]]
    assert base["volume"] == "erofs,node" and base["refcount"] == 2
    assert base["fetched_bytes"] <= base["size"]  # fetched once for both images


def test_removing_the_image_unmounts_it_and_releases_its_cookies(node, busybox_images):
    node.pull(busybox_images["a"])
    name = containerd_name(busybox_images["a"])
    node.containerd.run(name, "c1", "cat", "/etc/motd")
    assert node.daemon.client.status()["mounts"]
    node.containerd.ctr("image", "rm", "--sync", name)  # --sync: containerd's GC runs now
    status = node.daemon.client.status()
    assert (status["mounts"], status["domains"], status["cookies"]) == ([], [], [])
    assert node.containerd.ctr("snapshots", "--snapshotter", "erofsd", "ls").stdout \
        .splitlines()[1:] == []
    node.pull(busybox_images["a"])  # and it comes back
    assert node.containerd.run(name, "c2", "cat", "/app/a.txt").stdout == "app a\n"


def test_with_the_snapshotter_down_containerd_says_so_and_nothing_breaks(node, busybox_images):
    node.pull(busybox_images["a"])
    name = containerd_name(busybox_images["a"])
    node.snapshotter.stop()
    failed = node.containerd.run(name, "c1", "cat", "/etc/motd", check=False)
    assert failed.returncode != 0 and "unavailable" in failed.stderr, failed.stderr
    pulled = node.pull(busybox_images["b"], check=False)
    assert pulled.returncode == 1 and "Traceback" not in pulled.stderr
    assert pulled.stderr.startswith("erofsd: error:"), pulled.stderr
    node.restart_snapshotter()
    assert node.containerd.run(name, "c2", "cat", "/etc/motd").stdout.encode() == \
        busybox_images["files"]["/etc/motd"]
    node.containerd.ctr("container", "delete", "c1", check=False)
    node.pull(busybox_images["b"])
    assert node.containerd.run(containerd_name(busybox_images["b"]), "c3", "cat",
                               "/app/b.txt").stdout == "app b\n"


def test_an_ordinary_image_runs_through_the_same_snapshotter(node, busybox_images):
    name = containerd_name(busybox_images["ordinary"])
    node.containerd.ctr("image", "pull", "--plain-http", "--snapshotter", "erofsd", name)
    assert node.containerd.run(name, "c1", "sh", "-c", "cat /app/a.txt; echo new > /tmp/x; "
                               "cat /tmp/x").stdout == "app a\nnew\n"
    assert node.daemon.client.status()["mounts"] == []  # nothing of erofsd's was needed


def test_an_ordinary_image_runs_lazily_through_its_index(node, registry, busybox_images):
    """No conversion: `erofsd index` beside the ordinary image, then a lazy pull and run."""
    from erofsd.oci.indexartifact import index_reference
    ordinary = busybox_images["ordinary"]
    report = index_reference(ordinary, insecure=True)
    before = registry.blob_gets("ctd/ordinary", agent="containerd")  # by earlier tests
    pulled = json.loads(node.pull(ordinary, "--index", "discover", "--json").stdout)
    assert pulled["prepared"] == pulled["layers"] == 2  # the image's own two layers
    (mount,) = pulled["mounts"]
    assert mount["domain_id"] == "node" and mount["blobs"][0].startswith("sha256:")
    name = containerd_name(ordinary)
    assert node.containerd.run(name, "c1", "cat", "/app/a.txt").stdout == "app a\n"
    node.containerd.run(name, "c2", "sleep", "60", detach=True)
    big = node.containerd.ctr("task", "exec", "--exec-id", "e1", "c2", "sha256sum",
                              "/usr/share/big").stdout.split()[0]
    assert big == hashlib.sha256(busybox_images["files"]["/usr/share/big"]).hexdigest()
    assert registry.blob_gets("ctd/ordinary", agent="containerd") == before  # none now
    status = node.daemon.client.status()
    assert status["mounts"][0]["manifest_digest"] == report.subject.digest
    wrong = node.pull(busybox_images["a"], "--index", report.index.digest, check=False)
    assert wrong.returncode == 1 and "no index" in wrong.stderr  # not in that repository
