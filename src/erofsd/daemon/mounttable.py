"""What the daemon has mounted, kept on disk so a restarted daemon finds it again."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path


@dataclasses.dataclass
class MountRecord:
    mountpoint: str
    image: str
    fsid: str
    domain_id: str | None
    mode: str  # "fanotify" | "fuse"
    manifest: str  # the manifest as fetched (JSON text): restoring needs no network
    manifest_digest: str
    insecure: bool = False
    mirror: str | None = None
    worker_pid: int | None = None  # the FUSE worker process
    created: float = 0.0


class MountTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def load(self) -> list[MountRecord]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            return []  # a torn file cannot happen (atomic rename); an edited one is ignored
        return [MountRecord(**r) for r in raw.get("mounts", [])]

    def save(self, records: list[MountRecord]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".mounts-", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"mounts": [dataclasses.asdict(r) for r in records]}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def mounted_filesystems() -> dict[str, str]:
    """mountpoint -> filesystem type, from /proc/self/mountinfo."""
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            point = fields[4].encode().decode("unicode_escape")
            found[point] = fields[sep + 1]
    return found
