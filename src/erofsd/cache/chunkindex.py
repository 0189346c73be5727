"""Where a volume's chunks are, by digest: ``<volume dir>/chunks.db`` (sqlite).

    blobs(id, name, entered)                  the blobs whose tables are (being) entered
    chunks(key, blob, chunk, length, offset)  one row per chunk-table entry; the key is
                                              the first 64 bits of the chunk's sha256

A blob's chunk table is entered the first time a process opens it, and its
rows go when GC removes it, so the index outlives processes, restarts and
the blobs' own users. It only says where to look: whether a chunk is there
is its blob's present map, and whether it is right is its digest, checked
on every copy (chunkshare.py). So an index that is stale, lost or damaged
(or a key two digests share) costs a fetch, never a wrong byte; one that is
missing or unreadable is rebuilt from the chunk tables the volume's cache
files hold. Rows of integers keep it small and quick: a table of 44,587
chunks enters in about 0.1 s, in transactions of ``ENTER_BATCH`` rows, so a
lookup meanwhile waits for one batch at most.

Every process that uses the volume (the daemon, FUSE workers, GC) opens the
same file; sqlite's locks serialise them. A failing index is logged and
treated as empty: it can never fail a read.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..erofs.chunktable import ChunkTable
from ..errors import CorruptImage
from .cachefile import table_after_data
from .presentmap import PresentMap

log = logging.getLogger("erofsd.cache")
INDEX_FILE = "chunks.db"
INDEX_FILES = (INDEX_FILE, INDEX_FILE + "-journal")  # what GC removes with a volume
SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, entered INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS chunks (
    key INTEGER NOT NULL, blob INTEGER NOT NULL, chunk INTEGER NOT NULL,
    length INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (key, blob, chunk)) WITHOUT ROWID;
"""
BUSY_SECONDS = 5.0
ENTER_BATCH = 4096


class ChunkIndex:
    """One volume's index, open in this process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / INDEX_FILE
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.fresh = False  # made anew just now: ``rebuild`` it from the cache files
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
            self.fresh = fresh
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def rebuild(self, maps: Iterable[Path] | None = None) -> None:
        """Enter the blobs of ``maps`` (present-map paths; default: every blob of the
        volume) whose cache files hold their chunk tables."""
        for map_path in sorted(self.directory.glob("*.map")) if maps is None else maps:
            table = _cached_table(map_path)
            if table is not None:
                self.enter(map_path.stem, table)

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
        """Record where the chunks of ``blob`` (its hex digest) are, once: a batch of
        rows per transaction, the blob marked entered with the last."""
        for start in range(0, len(table.entries) or 1, ENTER_BATCH):
            with self._using("enter a blob") as db:
                if db is None or not _enter(db, blob, table, start, ENTER_BATCH):
                    return

    def places(self, digest: bytes, length: int, besides: str) -> list[tuple[str, int, int]]:
        """(blob, chunk index, offset) of every chunk ``digest`` of ``length`` bytes the
        volume's blobs other than ``besides`` have a place for (present or not)."""
        with self._using("look up a chunk") as db:
            if db is not None:
                return db.execute(
                    "SELECT blobs.name, chunk, offset FROM chunks JOIN blobs ON blobs.id = blob "
                    "WHERE key = ? AND length = ? AND blobs.name != ? ORDER BY blobs.name, chunk",
                    (_key(digest), length, besides)).fetchall()
        return []

    def forget(self, blob: str) -> None:
        with self._using("forget a blob") as db:
            if db is not None:
                with _transaction(db):
                    db.execute("DELETE FROM chunks WHERE blob IN "
                               "(SELECT id FROM blobs WHERE name = ?)", (blob,))
                    db.execute("DELETE FROM blobs WHERE name = ?", (blob,))


def forget_blob(directory: Path, blob: str) -> None:
    """Drop a removed blob's rows, if the volume has an index (GC); one found damaged is
    made again from what the volume still holds."""
    if (directory / INDEX_FILE).exists():
        index = ChunkIndex(directory)
        if index.fresh:
            index.rebuild()
        index.forget(blob)
        index.close()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction, committed at the end or rolled back. (The connection is in
    autocommit mode, where ``with db`` begins nothing: every row would be a
    transaction of its own, synced to disk, 28 s for a stdlib image's 44,587 chunks.)"""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _enter(db: sqlite3.Connection, blob: str, table: ChunkTable, start: int,
           count: int) -> bool:
    """Rows ``start`` to ``start + count`` of ``blob``'s table, in one transaction, the blob
    marked entered with its last; False when there is no more to do."""
    with _transaction(db):
        db.execute("INSERT OR IGNORE INTO blobs (name) VALUES (?)", (blob,))
        blob_id, entered = db.execute("SELECT id, entered FROM blobs WHERE name = ?",
                                      (blob,)).fetchone()
        if entered:
            return False
        entries = table.entries[start:start + count]
        db.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?)",
                       ((_key(e.digest), blob_id, i, e.length, e.offset)
                        for i, e in enumerate(entries, start)))
        if start + count < len(table.entries):
            return True
        db.execute("UPDATE blobs SET entered = 1 WHERE id = ?", (blob_id,))
        return False


def _key(digest: bytes) -> int:
    """A chunk's row key: the first 64 bits of its sha256, as sqlite's signed integer."""
    return int.from_bytes(digest[:8], "big", signed=True)


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
