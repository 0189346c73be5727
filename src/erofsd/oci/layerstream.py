"""A layer of an ordinary image as a stream of tar bytes, checked on the way.

The compressed blob is read from its source in ranged pieces (never held
whole), hashed against the descriptor's digest, decompressed (gzip,
including concatenated members, or zstd), and the tar bytes hashed against
the config's ``diff_id``. With ``span_size``, a gzip layer is cut into spans
as it is read (gzipspans.py), for a tar index. ``finish`` raises if either digest, or the size,
does not match; a stream that ends early raises as it is read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Callable
from typing import TypeVar

import zstandard

from ..erofs.gzipspans import GzipIndexer, InflateError
from ..errors import BuildError, IntegrityError, Unsupported
from .descriptor import Descriptor
from .source import BlobSource

T = TypeVar("T")
PIECE = 4 << 20
TAIL = 1 << 20  # bytes kept after the tar's last entry, to find its end marker

LAYER_COMPRESSION = {
    "application/vnd.oci.image.layer.v1.tar": None,
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": None,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": None,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}


class LayerIntegrityError(ValueError):
    """Raised by ``finish``; ``read_checked`` turns it into an error naming the layer."""


def read_checked(stream: LayerStream, name: str, read: Callable[[LayerStream], T]) -> T:
    """``read(stream)``, then every digest of the layer checked. A damaged layer is named
    by its digest (IntegrityError), even when the damage broke the tar first."""
    try:
        result = read(stream)
        stream.finish()
        return result
    except BuildError:
        try:
            stream.finish()
        except LayerIntegrityError as e:
            raise IntegrityError(f"layer {name}: {e}") from None
        except Exception:  # the tar's own error says more
            pass
        raise
    except LayerIntegrityError as e:
        raise IntegrityError(f"layer {name}: {e}") from None


class _BlobReader(io.RawIOBase):
    """The compressed blob, read from its source piece by piece and hashed."""

    def __init__(self, source: BlobSource, descriptor: Descriptor,
                 progress: Callable[[int], None] | None) -> None:
        self.source, self.descriptor, self.progress = source, descriptor, progress
        self.offset = 0
        self.hash = hashlib.sha256()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        if not self._buffer:
            left = self.descriptor.size - self.offset
            if left <= 0:
                return 0
            self._buffer = self.source.read_range(self.descriptor.digest, self.offset,
                                                  min(PIECE, left))
            self.offset += len(self._buffer)
            self.hash.update(self._buffer)
            if self.progress:
                self.progress(len(self._buffer))
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


class LayerStream(io.RawIOBase):
    def __init__(self, source: BlobSource, descriptor: Descriptor, diff_id: str | None, *,
                 progress: Callable[[int], None] | None = None,
                 span_size: int | None = None) -> None:
        if descriptor.media_type not in LAYER_COMPRESSION:
            raise Unsupported(f"layer {descriptor.digest} has media type "
                              f"{descriptor.media_type!r}, not a tar layer")
        self.descriptor, self.diff_id = descriptor, diff_id
        self._raw = _BlobReader(source, descriptor, progress)
        buffered = io.BufferedReader(self._raw, PIECE)
        compression = LAYER_COMPRESSION[descriptor.media_type]
        self.indexer: GzipIndexer | None = None
        if span_size is not None:
            if compression != "gzip":
                raise Unsupported(f"layer {descriptor.digest} is {compression or 'not'} "
                                  "compressed: only a gzip layer can be entered mid-stream; "
                                  "convert the image instead")
            self._tar = self.indexer = GzipIndexer(buffered.read, span_size)
        elif compression == "gzip":
            self._tar: io.RawIOBase = gzip.GzipFile(fileobj=buffered, mode="rb")
        elif compression == "zstd":
            self._tar = zstandard.ZstdDecompressor().stream_reader(buffered,
                                                                   read_across_frames=True)
        else:
            self._tar = buffered
        self.position = 0
        self.hash = hashlib.sha256()
        self._tail = bytearray()  # the last TAIL bytes delivered
        self._tail_start = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        data = self._read(len(target))
        if not data:
            return 0
        n = len(data)
        target[:n] = data
        self._deliver(data)
        return n

    def _deliver(self, data: bytes) -> None:
        self.hash.update(data)
        self.position += len(data)
        self._tail += data
        if len(self._tail) > TAIL:
            drop = len(self._tail) - TAIL
            del self._tail[:drop]
            self._tail_start += drop

    def _read(self, n: int) -> bytes:
        """Decompressed bytes; a damaged or cut compressed stream is a ValueError."""
        try:
            return self._tar.read(n)
        except (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError, InflateError) as e:
            raise ValueError(f"the compressed layer stream is truncated or corrupt: {e}") \
                from None

    def tail_after(self, offset: int) -> bytes:
        """Read to the end, then return the bytes from ``offset`` on (b"" if too many)."""
        while True:
            data = self._read(PIECE)
            if not data:
                break
            self._deliver(data)
        if offset < self._tail_start:
            return b""
        return bytes(self._tail[offset - self._tail_start:])

    def finish(self) -> None:
        """Read what is left, then check size and digests; raise LayerIntegrityError.

        The compressed digest is checked even when decompression failed (the
        rest is hashed without decompressing), so a damaged blob is named as
        such; the diff_id only when the tar bytes were all read.
        """
        try:
            self.tail_after(self.position)
            decompressed = True
        except ValueError:
            decompressed = False
        while self._raw.read(PIECE):
            pass
        d = self.descriptor
        if self._raw.offset != d.size:
            raise LayerIntegrityError(f"read {self._raw.offset} bytes, descriptor says {d.size}")
        digest = "sha256:" + self._raw.hash.hexdigest()
        if digest != d.digest:
            raise LayerIntegrityError(f"content is {digest}, descriptor says {d.digest}")
        if decompressed and self.diff_id and "sha256:" + self.hash.hexdigest() != self.diff_id:
            raise LayerIntegrityError(f"uncompressed content does not match diff_id "
                                      f"{self.diff_id}")
