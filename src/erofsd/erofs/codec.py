"""How a frame of stored chunks is coded in a blob: raw, or one zstd frame.

A *frame* is a run of consecutive stored chunks that travels as one piece:
its stored bytes decode to exactly the kernel-visible bytes of those
chunks (block padding included, which zstd codes almost for free). The
builder chooses raw when compressing does not shrink the frame.

Decoding trusts nothing about the input's size: a zstd frame must declare
its content size, that size must be the one the chunk table gives, and the
decompressor never writes past it, so a decompression bomb is an error
before it is a big allocation. Callers check the stored bytes' sha256
before they get here: a lying source never reaches the decompressor.
"""

from __future__ import annotations

import dataclasses
import threading

import zstandard

from ..errors import IntegrityError, InvalidArgument
from .gzipspans import Checkpoint, InflateError, inflate_span

RAW = 0
ZSTD = 1
GZIP_SPAN = 2  # a span of an ordinary gzip layer, entered at its checkpoint (gzipspans.py)
NAMES = {RAW: "raw", ZSTD: "zstd", GZIP_SPAN: "gzip span"}

DEFAULT_LEVEL = 6
DEFAULT_FRAME_SIZE = 64 << 10
MAX_LEVEL = 22


@dataclasses.dataclass(frozen=True)
class Compression:
    """How a builder codes a blob: zstd at ``level``; chunks smaller than
    ``frame_size`` packed together into frames of at most that many bytes
    (0: every chunk is a frame of its own)."""

    level: int = DEFAULT_LEVEL
    frame_size: int = DEFAULT_FRAME_SIZE

    def __post_init__(self) -> None:
        if not 1 <= self.level <= MAX_LEVEL:
            raise InvalidArgument(f"zstd level {self.level} must be from 1 to {MAX_LEVEL}")
        if self.frame_size < 0 or self.frame_size > 1 << 30:
            raise InvalidArgument(f"frame size {self.frame_size} must be from 0 to 1 GiB")

    @property
    def name(self) -> str:
        """A short stable name, as it goes into conversion cache keys and messages."""
        return f"zstd{self.level}-f{self.frame_size}"


def parse_compression(text: str) -> Compression | None:
    """``zstd``, ``zstd:LEVEL`` or ``none`` (uncompressed blobs, the format before this one)."""
    name, _, level = text.strip().lower().partition(":")
    if name == "none" and not level:
        return None
    if name != "zstd":
        raise InvalidArgument(f"unknown compression {text!r}: use zstd, zstd:LEVEL or none")
    if not level:
        return Compression()
    if not level.isdigit():
        raise InvalidArgument(f"zstd level {level!r} is not a number")
    return Compression(level=int(level))


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """One compressor per thread and level (they are not thread-safe, and cost to make)."""
    found = getattr(_local, "compressors", None)
    if found is None:
        found = _local.compressors = {}
    if level not in found:
        found[level] = zstandard.ZstdCompressor(level=level, write_content_size=True,
                                                write_checksum=False)
    return found[level]


def encode(data: bytes, level: int) -> tuple[int, bytes]:
    """(codec, stored bytes) for a frame: zstd, or raw when zstd does not shrink it."""
    packed = _compressor(level).compress(data)
    if len(packed) >= len(data):
        return RAW, data
    return ZSTD, packed


def encode_window(window: bytes) -> bytes:
    """A checkpoint's window as a span table's window blob keeps it: one zstd frame."""
    return _compressor(DEFAULT_LEVEL).compress(window) if window else b""


def decode_window(stored: bytes, size: int) -> bytes:
    return decode(ZSTD, stored, size) if size else b""


def decode(codec: int, stored: bytes, size: int, checkpoint: Checkpoint | None = None
           ) -> bytes:
    """The ``size`` bytes a frame holds, or IntegrityError; never more, never fewer."""
    if codec == GZIP_SPAN:
        if checkpoint is None:
            raise IntegrityError("a gzip span without its checkpoint")
        try:
            return inflate_span(checkpoint, stored, size)
        except InflateError as e:
            raise IntegrityError(f"gzip span does not inflate: {e}") from None
    if codec == RAW:
        if len(stored) != size:
            raise IntegrityError(f"raw frame of {len(stored)} bytes, its table says {size}")
        return stored
    if codec != ZSTD:
        raise IntegrityError(f"frame coded with unknown codec {codec}")
    try:
        declared = zstandard.frame_content_size(stored)
    except zstandard.ZstdError as e:
        raise IntegrityError(f"zstd frame has a bad header: {e}") from None
    if declared != size:
        raise IntegrityError(f"zstd frame declares {declared} bytes, its table says {size}")
    try:
        data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=size)
    except zstandard.ZstdError as e:
        raise IntegrityError(f"zstd frame does not decode: {e}") from None
    if len(data) != size:
        raise IntegrityError(f"zstd frame decodes to {len(data)} bytes, its table says {size}")
    return data
