"""The blob cache in a state directory: volumes, cached blobs, bootstraps, GC.

    <state>/cache/<volume dir>/volume        the volume key, e.g. "erofs,d1"
    <state>/cache/<volume dir>/<hex>         the blob, sparse (the kernel's device file),
                                             then its chunk table (cachefile.py)
    <state>/cache/<volume dir>/<hex>.map     its present map (presentmap.py)
    <state>/cache/<volume dir>/chunks.db     where the volume's chunks are (chunkindex.py)
    <state>/bootstraps/<hex>                 verified bootstraps, by digest

Every process that has a blob (or bootstrap) open holds a shared flock on
it; GC takes an exclusive one without waiting, so a blob in use anywhere
is never removed. Within one process, every user of a (volume, blob) gets
the same ``CachedBlob``, so single flight covers all of them.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from hashlib import sha256
from pathlib import Path

from ..erofs.chunktable import ChunkTable
from ..errors import CacheError, CorruptImage, IntegrityError
from ..oci.descriptor import sha256_digest
from ..oci.image import BlobRef, check_chunk_table
from ..oci.source import BlobSource, read_from_sources
from ..posixio import pwrite_all
from .blob import VERIFY_ATTEMPTS, CachedBlob, CacheTuning
from .cachefile import table_after_data
from .chunkindex import INDEX_FILES, forget_blob
from .chunkshare import VolumeChunks
from .presentmap import PresentMap

log = logging.getLogger("erofsd.cache")
DEFAULT_STATE_DIR = "/var/lib/erofsd"
KEY_FILE = "volume"


def default_state_dir() -> str:
    return os.environ.get("EROFSD_STATE_DIR") or DEFAULT_STATE_DIR


def volume_dirname(key: str) -> str:
    """A safe directory name for a volume key (long keys end in a hash).

    Everything but [A-Za-z0-9._-] is %-encoded, the ',' of "erofs,<id>"
    included: the kernel's mount options are comma-separated, so a cache
    file path with a ',' could not be passed as ``device=``.
    """
    name = urllib.parse.quote(key, safe="-_")
    if len(name) > 200:
        name = name[:150] + "~" + sha256(key.encode()).hexdigest()[:40]
    return name


@dataclasses.dataclass
class BlobListing:
    blob: str
    size: int  # as stored in the registry (compressed or not)
    data_size: int  # as cached: what the kernel reads
    cached_bytes: int
    fetched_bytes: int
    disk_bytes: int
    last_used: int
    in_use: bool


@dataclasses.dataclass
class VolumeListing:
    volume: str
    path: str
    blobs: list[BlobListing]


@dataclasses.dataclass
class GcReport:
    removed: list[str] = dataclasses.field(default_factory=list)  # "volume blob"
    freed_bytes: int = 0
    kept_in_use: int = 0
    total_before: int = 0
    total_after: int = 0


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _open_locked_shared(path: str, flags: int, mode: int = 0o600) -> int:
    """Open and take a shared flock, making sure GC did not unlink the file meanwhile."""
    while True:
        fd = os.open(path, flags | os.O_CLOEXEC, mode)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
        if not flags & os.O_CREAT:
            raise FileNotFoundError(errno.ENOENT, "removed while opening", path)


class BlobCache:
    def __init__(self, state_dir: str | os.PathLike | None = None,
                 tuning: CacheTuning | None = None) -> None:
        self.state_dir = Path(state_dir or default_state_dir())
        self.root = self.state_dir / "cache"
        self.bootstraps = self.state_dir / "bootstraps"
        self.tuning = tuning or CacheTuning()
        for directory in (self.state_dir, self.root, self.bootstraps):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._open: dict[tuple[str, str], list] = {}  # key -> [CachedBlob, references]
        self._opening: dict[tuple[str, str], threading.Lock] = {}
        self._volumes: dict[str, VolumeChunks] = {}  # the chunks of each volume's open blobs
        self._lock = threading.Lock()

    # -- cookies --------------------------------------------------------------

    def volume_dir(self, volume: str) -> Path:
        path = self.root / volume_dirname(volume)
        path.mkdir(mode=0o700, exist_ok=True)
        key_file = path / KEY_FILE
        if not key_file.exists():  # concurrent writers each use their own temporary name
            fd, tmp = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=path)
            with os.fdopen(fd, "w") as f:
                f.write(volume)
            os.replace(tmp, key_file)
        return path

    def acquire(self, volume: str, ref: BlobRef, sources: Sequence[BlobSource]) -> CachedBlob:
        """The cached blob for (volume, blob), opened once per process and refcounted."""
        key = (volume, ref.digest)
        with self._lock:
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:
            with self._lock:
                found = self._open.get(key)
                if found:
                    found[1] += 1
                    for source in sources:
                        found[0].add_source(source)
                    return found[0]
            blob = self._open_blob(volume, ref, sources)
            with self._lock:
                self._open[key] = [blob, 1]
                chunks = self._volumes.get(volume)
                if chunks is None:
                    chunks = self._volumes[volume] = VolumeChunks(Path(blob.data_path).parent)
                chunks.register(blob)
                blob.neighbours = chunks
            chunks.enter(blob)
            return blob

    def release(self, blob: CachedBlob) -> None:
        key = (blob.volume, blob.ref.digest)
        with self._lock:
            found = self._open.get(key)
            if not found or found[0] is not blob:
                return
            found[1] -= 1
            if found[1] > 0:
                return
            del self._open[key]
            chunks = blob.neighbours
            last = chunks is not None and chunks.unregister(blob)
            if last:
                del self._volumes[blob.volume]
        if last:
            chunks.close()
        blob.pmap.update_header(last_used=int(time.time()))
        blob.close()

    def _open_blob(self, volume: str, ref: BlobRef, sources: Sequence[BlobSource]) -> CachedBlob:
        for _ in range(3):  # GC may remove an empty volume directory under us
            directory = self.volume_dir(volume)
            data_path = str(directory / ref.digest.split(":", 1)[1])
            try:
                return self._open_blob_in(volume, ref, sources, data_path)
            except FileNotFoundError:
                continue
        raise CacheError(f"cannot open the cache of {ref.digest} in {volume}")

    def _open_blob_in(self, volume: str, ref: BlobRef, sources: Sequence[BlobSource],
                      data_path: str) -> CachedBlob:
        map_path = data_path + ".map"
        data_fd = os.open(data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        pmap = None
        try:
            size = os.fstat(data_fd).st_size
            if size > ref.cache_size:
                raise CorruptImage(f"cache file {data_path} is larger than its blob")
            if size < ref.cache_size:
                os.ftruncate(data_fd, ref.cache_size)
            if os.path.exists(map_path):
                pmap = PresentMap.from_fd(map_path, _open_locked_shared(map_path, os.O_RDWR))
            table, fetched = self._table(data_fd, ref, sources, pmap)
            if pmap is None:
                PresentMap.create(map_path, len(table.entries), ref.cache_size, ref.data_size)
                pmap = PresentMap.from_fd(map_path, _open_locked_shared(map_path, os.O_RDWR))
            pmap.check_fits(len(table.entries), ref.cache_size, ref.data_size)
            if os.stat(data_path).st_ino != os.fstat(data_fd).st_ino:  # GC raced us
                raise FileNotFoundError(errno.ENOENT, "removed while opening", data_path)
            pmap.update_header(table_present=True, add_fetched=fetched,
                               last_used=int(time.time()))
            blob = CachedBlob(volume, ref, data_path, data_fd, pmap, table, sources, self.tuning)
            blob.stats.fetched_bytes += fetched
            return blob
        except BaseException:
            os.close(data_fd)
            if pmap is not None:
                pmap.close()
            raise

    @staticmethod
    def _table(data_fd: int, ref: BlobRef, sources: Sequence[BlobSource],
               pmap: PresentMap | None) -> tuple[ChunkTable, int]:
        """The verified chunk table: from the cache file if there, else fetched and stored.

        The cache file keeps it right after the data, wherever the stored blob has it."""
        if pmap is not None and pmap.header.table_present:
            raw = os.pread(data_fd, ref.table_size, ref.data_size)
            if sha256_digest(raw) == ref.table_digest:
                return check_chunk_table(raw, ref), 0
            log.warning("cached chunk table of %s is damaged; fetching it again", ref.digest)
        fetched = 0
        for attempt in range(VERIFY_ATTEMPTS):
            raw = read_from_sources(sources, *ref.table_location, ref.table_size)
            fetched += len(raw)
            if sha256_digest(raw) == ref.table_digest:
                break
            log.warning("chunk table of %s failed verification (attempt %d)", ref.digest,
                        attempt + 1)
        else:
            raise IntegrityError(f"chunk table of {ref.digest} never matched its digest")
        table = check_chunk_table(raw, ref)
        try:
            pwrite_all(data_fd, raw, ref.data_size)
        except OSError as e:
            raise CacheError(f"cannot store the chunk table of {ref.digest}: {e.strerror}",
                             errno=errno.EIO) from None
        return table, fetched

    # -- bootstraps -----------------------------------------------------------

    def bootstrap(self, digest: str, size: int, fetch: Callable[[], bytes]) -> tuple[str, int]:
        """(path, fd holding a shared lock) of a verified bootstrap, fetched if missing."""
        path = self.bootstraps / digest.split(":", 1)[1]
        for _ in range(3):
            try:
                fd = _open_locked_shared(str(path), os.O_RDONLY)
            except FileNotFoundError:
                self._store_bootstrap(path, digest, size, fetch())
                continue
            if os.fstat(fd).st_size == size:
                return str(path), fd
            os.close(fd)
            raise CacheError(f"cached bootstrap {path} has the wrong size")
        raise CacheError(f"cannot keep bootstrap {digest} in {self.bootstraps}")

    @staticmethod
    def _store_bootstrap(path: Path, digest: str, size: int, data: bytes) -> None:
        if len(data) != size or sha256_digest(data) != digest:
            raise IntegrityError(f"bootstrap {digest} does not match its digest")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o400)
        os.replace(tmp, path)

    # -- listing and garbage collection ----------------------------------------

    def _map_paths(self) -> list[tuple[str, Path]]:
        found = []
        for directory in sorted(self.root.iterdir()):
            key_file = directory / KEY_FILE
            if not directory.is_dir() or directory.is_symlink() or not key_file.exists():
                continue
            volume = key_file.read_text()
            found += [(volume, p) for p in sorted(directory.glob("*.map"))]
        return found

    def _listing(self, map_path: Path) -> BlobListing:
        data_path = map_path.with_suffix("")
        pmap = PresentMap.read_only(str(map_path))
        try:
            header = pmap.header
            cached, size = 0, header.blob_size
            if header.table_present:
                try:
                    table, table_size = table_after_data(data_path, header.data_size)
                    cached, size = table.present_bytes(pmap.bytes), table.stored_size + table_size
                except (OSError, ValueError, CorruptImage):
                    cached = 0
            in_use = not _try_lock(pmap.fd, fcntl.LOCK_EX)
            disk = sum(os.stat(p).st_blocks * 512 for p in (data_path, map_path)
                       if os.path.exists(p))
            return BlobListing("sha256:" + data_path.name, size, header.data_size, cached,
                               header.fetched_bytes, disk, header.last_used, in_use)
        finally:
            pmap.close()

    def list(self) -> list[VolumeListing]:
        volumes: dict[str, VolumeListing] = {}
        for volume, map_path in self._map_paths():
            listing = volumes.setdefault(volume, VolumeListing(volume, str(map_path.parent), []))
            try:
                listing.blobs.append(self._listing(map_path))
            except (FileNotFoundError, CorruptImage):
                continue  # removed or being created meanwhile
        return list(volumes.values())

    def gc(self, max_size: int | None = None) -> GcReport:
        """Remove unreferenced blobs, least recently used first.

        Without ``max_size`` every unreferenced blob goes; with it, only as
        many as needed to bring the cache's disk use under ``max_size``.
        """
        report = GcReport()
        candidates = []
        for volume, map_path in self._map_paths():
            try:
                listing = self._listing(map_path)
            except (FileNotFoundError, CorruptImage):
                continue
            report.total_before += listing.disk_bytes
            candidates.append((listing.last_used, volume, map_path, listing))
        total = report.total_before
        for _, volume, map_path, listing in sorted(candidates, key=lambda c: c[0]):
            if max_size is not None and total <= max_size:
                break
            if self._remove_if_unused(map_path):
                report.removed.append(f"{volume} {listing.blob}")
                report.freed_bytes += listing.disk_bytes
                total -= listing.disk_bytes
            else:
                report.kept_in_use += 1
        for directory in self.root.iterdir():
            if not directory.is_dir() or directory.is_symlink():
                continue  # not a volume: not ours to remove
            leftovers = [p for p in directory.iterdir()
                         if p.name != KEY_FILE and p.name not in INDEX_FILES]
            if not leftovers:
                for name in INDEX_FILES:
                    (directory / name).unlink(missing_ok=True)
                (directory / KEY_FILE).unlink(missing_ok=True)
                try:
                    directory.rmdir()
                except OSError:
                    pass  # someone is filling it again
        report.total_after = total
        return report

    @staticmethod
    def _remove_if_unused(map_path: Path) -> bool:
        try:
            fd = os.open(map_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            if not _try_lock(fd, fcntl.LOCK_EX):
                return False
            map_path.with_suffix("").unlink(missing_ok=True)
            map_path.unlink(missing_ok=True)
            forget_blob(map_path.parent, map_path.stem)
            return True
        finally:
            os.close(fd)
