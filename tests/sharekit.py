"""Two images of mostly the same files built apart, read through a cache; shared extents."""

from __future__ import annotations

import dataclasses
import fcntl
import shutil
import struct
import sys
from pathlib import Path

from builds import build_layers
from erofsd.cache.store import BlobCache
from erofsd.images import open_resolved
from erofsd.oci.source import resolve_image
from treeutil import snapshot_image

STDLIB = Path(sys.modules["json"].__file__).parent.parent
COMMON = ("email", "json")


def two_images(tmp_path: Path) -> tuple[str, str]:
    """Two images of mostly the same files, built apart: no blob in common."""
    refs = []
    for name, extra in ("a", "asyncio"), ("b", "xml"):
        tree = tmp_path / f"tree-{name}"
        for part in (*COMMON, extra):
            shutil.copytree(STDLIB / part, tree / part,
                            ignore=shutil.ignore_patterns("__pycache__"))
        build_layers([tree], tmp_path / "layout", tag=name, compression=None)
        refs.append(f"oci:{tmp_path / 'layout'}:{name}")
    return refs[0], refs[1]


def common_bytes(tmp_path: Path) -> int:
    """Bytes of the files both images hold."""
    return sum(f.stat().st_size for part in COMMON
               for f in (tmp_path / "tree-a" / part).rglob("*") if f.is_file())


@dataclasses.dataclass
class Reading:
    tree: dict
    fetched: int  # from the image's source
    local: int  # from the volume's other blobs
    reflinked: int


def read_all(cache: BlobCache, ref: str, volume: str) -> Reading:
    """Every file of the image, and what reading them cost."""
    with open_resolved(resolve_image(ref), cache, volume) as opened:
        tree = snapshot_image(opened.image)
        return Reading(tree, *(sum(getattr(b.stats, field) for b in opened.blobs)
                               for field in ("fetched_bytes", "local_bytes",
                                             "reflinked_bytes")))


FS_IOC_FIEMAP = 0xC020660B
FIEMAP = struct.Struct("=QQIIII")  # start, length, flags, mapped extents, extent count
EXTENT = struct.Struct("=QQQ16xI12x")  # logical, physical, length, flags
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_SHARED = 0x2000
EXTENTS_PER_CALL = 256


def shared_bytes(path: str) -> int:
    """Bytes of the file on extents another file shares (FIEMAP)."""
    total, start = 0, 0
    with open(path, "rb") as f:
        while True:
            request = bytearray(FIEMAP.pack(start, 2**64 - 1 - start, FIEMAP_FLAG_SYNC, 0,
                                            EXTENTS_PER_CALL, 0)
                                + bytes(EXTENT.size * EXTENTS_PER_CALL))
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, request)
            mapped = FIEMAP.unpack_from(request)[3]
            if not mapped:
                return total
            for k in range(mapped):
                logical, _, length, flags = EXTENT.unpack_from(request, FIEMAP.size
                                                                + k * EXTENT.size)
                if flags & FIEMAP_EXTENT_SHARED:
                    total += length
                if flags & FIEMAP_EXTENT_LAST:
                    return total
                start = logical + length
