"""What the daemon has mounted, kept on disk so a restarted daemon finds it again."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from ..datapaths.base import Mount

log = logging.getLogger("erofsd.daemon")


class MountTable:
    """``mounts.json``: every mount's persisted record, replaced atomically on each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def load(self) -> list[Mount]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            log.error("%s is not JSON (edited by hand?): no mount is taken back", self.path)
            return []  # a torn file cannot happen (atomic rename)
        mounts = []
        for record in raw.get("mounts", []):
            try:
                mounts.append(Mount.from_json(record))
            except ValueError as e:
                log.error("%s: %s: %r", self.path, e, record)
        return mounts

    def save(self, mounts: list[Mount]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".mounts-", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"mounts": [m.to_json() for m in mounts]}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
