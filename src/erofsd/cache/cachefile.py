"""What a cache file holds after its data: the blob's chunk table.

    <hex>      the data the kernel reads (``data_size`` bytes, sparse until present),
               then the packed chunk table
    <hex>.map  its present map, whose header says whether the table is there yet

The cache opens a blob with the table checked against the digest its image
pins (store.py); listings and the chunk index read it back from here, for
sizes and places only, never to hand a byte to a reader.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..erofs.chunktable import ChunkTable


def table_after_data(data_path: str | Path, data_size: int) -> tuple[ChunkTable, int]:
    """The chunk table kept after ``data_size`` bytes of data, and its packed size
    (unverified). OSError, ValueError or CorruptImage when the file holds none."""
    with open(data_path, "rb") as f:
        raw = os.pread(f.fileno(), os.fstat(f.fileno()).st_size - data_size, data_size)
    return ChunkTable.unpack(raw, data_size), len(raw)
