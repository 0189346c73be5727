"""The FUSE data path (datapaths/fuse.py): a worker serves exactly what the daemon resolved."""

from __future__ import annotations

from erofsd.oci.copy import push
from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
from erofsd.oci.transport import Transport
from treeutil import assert_same_tree, snapshot_dir


def test_a_tag_that_moves_after_the_daemon_resolved_it_changes_nothing(
        daemon, registry, proxy, family, family_snapshots):
    """The registry counted image A's blobs; the worker must serve A, not what the tag
    names by the time it starts (it used to resolve the reference again)."""
    tag = registry.ref("moving/img", "t")
    transport = Transport(insecure=True)
    push(parse_layout_ref(f"oci:{family['layout']}:a"), parse_registry_ref(tag), transport)
    moved: list[str] = []

    def move_the_tag_to_b(path: str) -> None:
        if not moved:  # the daemon's own resolve has just been answered
            moved.append(path)
            push(parse_layout_ref(f"oci:{family['layout']}:b"), parse_registry_ref(tag),
                 transport)

    proxy.after_manifest = move_the_tag_to_b
    mnt = daemon.mountpoint("moving")
    view = daemon.client.mount(proxy.route(tag), mnt, mode="fuse", insecure=True)
    assert moved, "the tag never moved"
    assert view["manifest_digest"] == family_snapshots["a_manifest"].digest
    assert view["blobs"] == [b.digest for b in family_snapshots["a_manifest"].blobs]
    assert_same_tree(snapshot_dir(mnt), family_snapshots["a"])
    daemon.client.umount(mnt)
