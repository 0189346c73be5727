"""Check an image: walk all metadata, map every chunk, verify every stored chunk.

With chunk tables (erofsd images) every chunk index must point at the start
of a stored chunk big enough for it, and every stored chunk must match its
sha256. Given the blobs as they are stored (a local layout), every frame's
stored bytes are checked against their own sha256 too, then decoded and
every chunk in them checked. Without tables (erofs-utils images) every
byte of every file is read, which still catches truncated devices and bad
mappings.
"""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Callable, Sequence

from ..errors import ErofsdError
from .chunktable import ChunkTable
from .image import Image
from .inode import Inode
from .ondisk import LAYOUT_CHUNK_BASED
from .readat import ReadAt

READ_PIECE = 1 << 20


@dataclasses.dataclass
class CheckReport:
    inodes: int = 0
    directories: int = 0
    files: int = 0
    symlinks: int = 0
    others: int = 0
    file_bytes: int = 0
    chunks_verified: int = 0
    bytes_verified: int = 0
    frames_verified: int = 0  # stored frames, when the stored blobs were given
    stored_bytes_verified: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_image(image: Image, tables: Sequence[ChunkTable] | None, blobs: Sequence[ReadAt],
                progress: Callable[[int], None] | None = None,
                stored: Sequence[ReadAt] | None = None) -> CheckReport:
    report = CheckReport()
    seen: set[int] = set()
    try:
        for path, inode in image.walk():
            if inode.nid in seen:
                continue
            seen.add(inode.nid)
            _check_inode(image, inode, tables, report, path)
    except ErofsdError as e:
        report.problems.append(f"metadata: {e}")
    if tables is not None and stored is not None:
        for device, (table, blob) in enumerate(zip(tables, stored, strict=True), start=1):
            _verify_stored_blob(device, table, blob, report, progress)
    elif tables is not None:
        for device, (table, blob) in enumerate(zip(tables, blobs, strict=True), start=1):
            _verify_blob(device, table, blob, report, progress)
    return report


def _check_inode(image: Image, inode: Inode, tables: Sequence[ChunkTable] | None,
                 report: CheckReport, path: bytes) -> None:
    report.inodes += 1
    image.xattrs(inode)
    mode = inode.mode
    if stat.S_ISDIR(mode):
        report.directories += 1
    elif stat.S_ISLNK(mode):
        report.symlinks += 1
        image.readlink(inode)
    elif stat.S_ISREG(mode):
        report.files += 1
        report.file_bytes += inode.size
        if tables is not None and inode.layout == LAYOUT_CHUNK_BASED:
            _check_chunk_refs(image, inode, tables, report, path)
        else:
            for offset in range(0, inode.size, READ_PIECE):
                image.read(inode, offset, READ_PIECE)
    else:
        report.others += 1


def _check_chunk_refs(image: Image, inode: Inode, tables: Sequence[ChunkTable],
                      report: CheckReport, path: bytes) -> None:
    offset = 0
    while offset < inode.size:
        extent = image.map(inode, offset)
        if extent.device is not None:
            where = f"{path.decode(errors='replace')} at {offset}"
            if extent.device == 0:
                report.problems.append(f"{where}: chunk points into the bootstrap")
            else:
                table = tables[extent.device - 1]
                hits = table.covering(extent.physical, extent.physical + 1)
                needed = -(-extent.length // image.block_size) * image.block_size
                entry = table.entries[hits.start] if hits else None
                if table.version == 3:  # a tar's span table: file data lies anywhere in it
                    if extent.physical + extent.length > table.data_size:
                        report.problems.append(f"{where}: chunk at blob {extent.device} byte "
                                               f"{extent.physical} runs past its tar")
                elif entry is None or entry.offset != extent.physical or entry.length < needed:
                    report.problems.append(f"{where}: chunk at blob {extent.device} byte "
                                           f"{extent.physical} is not a stored chunk")
        offset += extent.length


def _verify_blob(device: int, table: ChunkTable, blob: ReadAt, report: CheckReport,
                 progress: Callable[[int], None] | None) -> None:
    for index, entry in enumerate(table.entries):
        try:
            data = blob.read_at(entry.offset, entry.length)
        except ErofsdError as e:
            report.problems.append(f"blob {device}: chunk at {entry.offset}: {e}")
            continue
        if not table.verify(index, data):
            report.problems.append(f"blob {device}: chunk at {entry.offset}+{entry.length} "
                                   "does not match its digest")
        else:
            report.chunks_verified += 1
            report.bytes_verified += entry.length
        if progress:
            progress(entry.length)


def _verify_stored_blob(device: int, table: ChunkTable, stored: ReadAt, report: CheckReport,
                        progress: Callable[[int], None] | None) -> None:
    for index, frame in enumerate(table.frames):
        try:
            table.open_frame(index, stored.read_at(frame.stored_offset, frame.stored_length))
        except ErofsdError as e:
            report.problems.append(f"blob {device}: data at {frame.offset}+{frame.length} "
                                   f"(stored at {frame.stored_offset}): {e}")
        else:
            report.frames_verified += 1
            report.stored_bytes_verified += frame.stored_length
            report.chunks_verified += frame.stop - frame.first
            report.bytes_verified += frame.length
        if progress:
            progress(frame.length)
