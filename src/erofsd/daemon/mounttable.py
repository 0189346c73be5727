"""What the daemon has mounted, kept on disk so a restarted daemon finds it again.

Two files in the daemon's directory: ``mounts.json``, a snapshot of every
mount's record, replaced atomically; and ``mounts.log``, one JSON line per
change since (``{"add": record}`` or ``{"remove": mountpoint}``). A mount
or an unmount appends one line, so its cost does not grow with the number
of mounts; the log is folded into a new snapshot once it holds as many
lines as half the mounts (at least 64), and at every load: a fold costs
what the table holds and comes once in that many changes, so the work per
change stays constant on average.

Nothing is fsynced: the records must survive the daemon's crash, which the
page cache does, and after a power cut the mounts are gone anyway (the
daemon forgets what is no longer mounted). A line torn by a crash in the
middle of a write is the last one, and is skipped with a log line.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from ..datapaths.base import Mount

log = logging.getLogger("erofsd.daemon")

FOLD_AT_LEAST = 64  # log lines always allowed before folding


class MountTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.log_path = path.with_suffix(".log")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._records: dict[str, dict] = {}  # mountpoint -> record, in mount order
        self._logged = 0
        self._log_fd = -1

    def load(self) -> list[Mount]:
        """The mounts on disk (snapshot and log), folded into a fresh snapshot."""
        self._records = {}
        for record in self._read_snapshot():
            self._records[record.get("mountpoint")] = record
        for change in self._read_log():
            if "add" in change and isinstance(change["add"], dict):
                self._records[change["add"].get("mountpoint")] = change["add"]
            elif "remove" in change:
                self._records.pop(change["remove"], None)
        mounts = []
        for point, record in list(self._records.items()):
            try:
                mounts.append(Mount.from_json(record))
            except ValueError as e:
                log.error("%s: %s: %r", self.path, e, record)
                del self._records[point]
        self._fold()
        return mounts

    def add(self, mount: Mount) -> None:
        record = mount.to_json()
        self._records[mount.mountpoint] = record
        self._append({"add": record})

    def remove(self, mountpoint: str) -> None:
        if self._records.pop(mountpoint, None) is not None:
            self._append({"remove": mountpoint})

    def save(self, mounts: list[Mount]) -> None:
        """Replace everything with ``mounts``."""
        self._records = {m.mountpoint: m.to_json() for m in mounts}
        self._fold()

    def close(self) -> None:
        if self._log_fd >= 0:
            os.close(self._log_fd)
            self._log_fd = -1

    # -- files -----------------------------------------------------------------------

    def _read_snapshot(self) -> list[dict]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            log.error("%s is not JSON (edited by hand?): no mount is taken back", self.path)
            return []  # a torn file cannot happen (atomic rename)
        records = raw.get("mounts", []) if isinstance(raw, dict) else []
        return [r for r in records if isinstance(r, dict)]

    def _read_log(self) -> list[dict]:
        try:
            lines = self.log_path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        changes = []
        for number, line in enumerate(lines, 1):
            try:
                change = json.loads(line)
            except ValueError:
                log.error("%s line %d is not JSON (torn by a crash?): skipped",
                          self.log_path, number)
                continue
            if isinstance(change, dict):
                changes.append(change)
        return changes

    def _append(self, change: dict) -> None:
        if self._logged >= max(FOLD_AT_LEAST, len(self._records) // 2):
            self._fold()
            return
        if self._log_fd < 0:
            self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                   | os.O_CLOEXEC, 0o600)
        os.write(self._log_fd, json.dumps(change, separators=(",", ":")).encode() + b"\n")
        self._logged += 1

    def _fold(self) -> None:
        """A new snapshot of the records, then an empty log."""
        fd, tmp = tempfile.mkstemp(prefix=".mounts-", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"mounts": list(self._records.values())}, f, indent=1)
        os.replace(tmp, self.path)
        self.close()
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass
        self._logged = 0
