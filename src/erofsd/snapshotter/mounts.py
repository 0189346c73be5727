"""The mounts a snapshot is used through, as containerd's overlayfs snapshotter gives them.

No parent below: a bind mount of the snapshot's own directory (read-only
for a view). A view of one lower: a read-only bind mount of it. Otherwise
an overlay: the lowers (nearest first), and for an active snapshot its
upper and work directories. An erofsd image is one lower: its mount holds
every layer of the image.
"""

from __future__ import annotations

from collections.abc import Sequence

Mount = dict[str, object]  # {"type", "source", "options"}


def snapshot_mounts(kind: str, upper: str, work: str, lowers: Sequence[str]) -> list[Mount]:
    if not lowers:
        return [{"type": "bind", "source": upper,
                 "options": ["ro" if kind == "view" else "rw", "rbind"]}]
    if kind == "view" and len(lowers) == 1:
        return [{"type": "bind", "source": lowers[0], "options": ["ro", "rbind"]}]
    options = ["index=off"]  # the overlay index wants file handles every lower may not give
    if kind == "active":
        options += [f"workdir={work}", f"upperdir={upper}"]
    for path in lowers:
        if ":" in path or "," in path:
            raise ValueError(f"an overlay lower cannot be {path!r}")
    options.append("lowerdir=" + ":".join(lowers))
    return [{"type": "overlay", "source": "overlay", "options": options}]
