"""The snapshot tree, durable in SQLite: what containerd's snapshots are, and where.

Each snapshot is a row: its key (a committed snapshot's key is its name),
its parent's key, its kind, its labels, and for the layers of an erofsd
image what stands for them here: ``blob`` (a part of an image: no files
here at all) or ``image`` (the image, mounted by the erofsd daemon at
``mountpoint``). Every other snapshot is a directory of its own,
``snapshots/<id>/{fs,work}``, as containerd's overlayfs snapshotter keeps
them.

A change and the files it needs happen in one transaction: ``transaction``
runs the file work before COMMIT, so a crash either keeps both or leaves a
directory without a row, which ``orphans`` finds for Cleanup. WAL with
synchronous=FULL: a snapshot containerd was told about survives kill -9.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import AlreadyExists, Busy, InvalidArgument, NotFound

KINDS = ("active", "view", "committed")
SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    parent TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    remote TEXT NOT NULL DEFAULT '',
    image TEXT NOT NULL DEFAULT '',
    mountpoint TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
"""
COLUMNS = ("id", "key", "parent", "kind", "labels", "created", "updated", "remote", "image",
           "mountpoint")


@dataclasses.dataclass
class Snapshot:
    id: int
    key: str
    parent: str
    kind: str
    labels: dict[str, str]
    created: float
    updated: float
    remote: str = ""  # "", "blob" or "image"
    image: str = ""  # for "image": the reference the daemon mounted
    mountpoint: str = ""  # for "image"

    @classmethod
    def from_row(cls, row: tuple) -> Snapshot:
        values = dict(zip(COLUMNS, row, strict=True))
        values["labels"] = json.loads(values["labels"])
        return cls(**values)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One writer at a time; whatever the block does before it ends is committed with it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- reads ---------------------------------------------------------------------------

    def _one(self, sql: str, args: tuple) -> Snapshot | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM snapshots {sql}",
                                   args).fetchone()
        return Snapshot.from_row(row) if row else None

    def find(self, key: str) -> Snapshot | None:
        return self._one("WHERE key = ?", (key,))

    def get(self, key: str) -> Snapshot:
        found = self.find(key)
        if found is None:
            raise NotFound(f"snapshot {key} does not exist")
        return found

    def all(self) -> list[Snapshot]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM snapshots "
                                    "ORDER BY id").fetchall()
        return [Snapshot.from_row(r) for r in rows]

    def has_children(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1",
                                    (key,)).fetchone() is not None

    def ancestors(self, key: str) -> list[Snapshot]:
        """``key``'s parent, its parent, and so on to the root."""
        chain = []
        parent = self.get(key).parent
        while parent:
            snapshot = self.get(parent)
            chain.append(snapshot)
            parent = snapshot.parent
        return chain

    # -- writes (inside ``transaction``) -------------------------------------------------

    def insert(self, db: sqlite3.Connection, key: str, parent: str, kind: str,
               labels: dict[str, str], **remote: str) -> Snapshot:
        if kind not in KINDS:
            raise InvalidArgument(f"unknown snapshot kind {kind!r}")
        if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
            raise AlreadyExists(f"snapshot {key} already exists")
        if parent:
            row = db.execute("SELECT kind FROM snapshots WHERE key = ?", (parent,)).fetchone()
            if row is None:
                raise NotFound(f"parent snapshot {parent} does not exist")
            if row[0] != "committed":
                raise InvalidArgument(f"parent snapshot {parent} is not committed")
        now = time.time()
        cursor = db.execute(
            "INSERT INTO snapshots (key, parent, kind, labels, created, updated, remote, image,"
            " mountpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, parent, kind, json.dumps(labels), now, now, remote.get("remote", ""),
             remote.get("image", ""), remote.get("mountpoint", "")))
        return Snapshot(cursor.lastrowid, key, parent, kind, labels, now, now, **remote)

    def set(self, db: sqlite3.Connection, snapshot: Snapshot) -> None:
        """Write back a snapshot's key, kind, labels and mount (a commit, an update)."""
        snapshot.updated = time.time()
        db.execute("UPDATE snapshots SET key = ?, kind = ?, labels = ?, updated = ?, "
                   "mountpoint = ? WHERE id = ?",
                   (snapshot.key, snapshot.kind, json.dumps(snapshot.labels),
                    snapshot.updated, snapshot.mountpoint, snapshot.id))

    def delete(self, db: sqlite3.Connection, snapshot: Snapshot) -> None:
        if db.execute("SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1",
                      (snapshot.key,)).fetchone():
            raise Busy(f"snapshot {snapshot.key} has children: remove them first")
        db.execute("DELETE FROM snapshots WHERE id = ?", (snapshot.id,))

    def ids(self) -> set[int]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT id FROM snapshots")}
