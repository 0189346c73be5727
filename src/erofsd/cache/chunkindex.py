"""Where a volume's chunks are, by digest: ``<volume dir>/chunks.db`` (sqlite).

    blobs(blob)                                  the blobs whose tables are entered
    chunks(blob, chunk, digest, length, offset)  one row per chunk-table entry

A blob's chunk table is entered the first time a process opens it, and its
rows go when GC removes it, so the index outlives processes, restarts and
the blobs' own users. It only says where to look: whether a chunk is there
is its blob's present map, and whether it is right is its digest, checked
on every copy (chunkshare.py). So an index that is stale, lost or damaged
costs a fetch, never a wrong byte; one that is missing or unreadable is
rebuilt from the chunk tables the volume's cache files hold.

Every process that uses the volume (the daemon, FUSE workers, GC) opens the
same file; sqlite's locks serialise them. A failing index is logged and
treated as empty: it can never fail a read.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from ..erofs.chunktable import ChunkTable
from ..errors import CorruptImage
from .cachefile import table_after_data
from .presentmap import PresentMap

log = logging.getLogger("erofsd.cache")
INDEX_FILE = "chunks.db"
INDEX_FILES = (INDEX_FILE, INDEX_FILE + "-journal")  # what GC removes with a volume
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (blob TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    blob TEXT NOT NULL, chunk INTEGER NOT NULL, digest BLOB NOT NULL,
    length INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (blob, chunk)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_digest ON chunks (digest);
"""
BUSY_SECONDS = 5.0


class ChunkIndex:
    """One volume's index, open in this process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / INDEX_FILE
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open()
        except sqlite3.Error as e:
            log.warning("chunk index %s is unusable (%s): chunks are not shared", self.path, e)

    def _open(self) -> sqlite3.Connection:
        try:
            return self._open_as_is()
        except sqlite3.DatabaseError as e:  # derived data: start again from the cache files
            log.warning("chunk index %s is damaged (%s); rebuilding it", self.path, e)
            for name in INDEX_FILES:
                (self.directory / name).unlink(missing_ok=True)
            return self._open_as_is()

    def _open_as_is(self) -> sqlite3.Connection:
        fresh = not self.path.exists()
        db = self._connect()
        try:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok" or \
                    db.execute("PRAGMA user_version").fetchone()[0] not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError("fails its check, or is of another version")
            with db:
                db.executescript(SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if fresh:
                self._rebuild(db)
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _rebuild(self, db: sqlite3.Connection) -> None:
        """Enter every blob of the volume whose cache file holds its chunk table."""
        for map_path in sorted(self.directory.glob("*.map")):
            table = _cached_table(map_path)
            if table is not None:
                _enter(db, map_path.stem, table)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextlib.contextmanager
    def _using(self, doing: str) -> Iterator[sqlite3.Connection | None]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as e:
                log.warning("chunk index %s: cannot %s (%s)", self.path, doing, e)

    def enter(self, blob: str, table: ChunkTable) -> None:
        """Record where the chunks of ``blob`` (its hex digest) are, once."""
        with self._using("enter a blob") as db:
            if db is not None:
                _enter(db, blob, table)

    def places(self, digest: bytes, length: int, besides: str) -> list[tuple[str, int, int]]:
        """(blob, chunk index, offset) of every chunk ``digest`` of ``length`` bytes the
        volume's blobs other than ``besides`` have a place for (present or not)."""
        with self._using("look up a chunk") as db:
            if db is not None:
                return db.execute(
                    "SELECT blob, chunk, offset FROM chunks WHERE digest = ? AND length = ? "
                    "AND blob != ? ORDER BY blob, chunk", (digest, length, besides)).fetchall()
        return []

    def forget(self, blob: str) -> None:
        with self._using("forget a blob") as db:
            if db is not None:
                with db:
                    db.execute("DELETE FROM chunks WHERE blob = ?", (blob,))
                    db.execute("DELETE FROM blobs WHERE blob = ?", (blob,))


def forget_blob(directory: Path, blob: str) -> None:
    """Drop a removed blob's rows, if the volume has an index (GC)."""
    if (directory / INDEX_FILE).exists():
        index = ChunkIndex(directory)
        index.forget(blob)
        index.close()


def _enter(db: sqlite3.Connection, blob: str, table: ChunkTable) -> None:
    with db:
        if db.execute("SELECT 1 FROM blobs WHERE blob = ?", (blob,)).fetchone():
            return
        db.execute("INSERT INTO blobs VALUES (?)", (blob,))
        db.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?)",
                       ((blob, i, e.digest, e.length, e.offset)
                        for i, e in enumerate(table.entries)))


def _cached_table(map_path: Path) -> ChunkTable | None:
    """The chunk table a cache file keeps after its data, if it has one (unverified:
    the index only points, and every copy is checked against its digest)."""
    try:
        pmap = PresentMap.read_only(str(map_path))
    except (OSError, CorruptImage):
        return None
    try:
        header = pmap.header
        if not header.table_present:
            return None
        return table_after_data(map_path.with_suffix(""), header.data_size)[0]
    except (OSError, ValueError, CorruptImage):
        return None
    finally:
        pmap.close()
