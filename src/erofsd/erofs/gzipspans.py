"""Enter a gzip stream in the middle: spans, their checkpoints, and libz through ctypes.

A deflate stream can be entered at the start of any of its blocks, given
the 32 KiB of output before it (the window back-references may reach) and,
blocks being bit-aligned, the bits of the byte where the block begins.
Python's ``zlib`` exposes neither where blocks begin nor a way to start
mid-byte, so this module drives libz itself (``inflate`` with ``Z_BLOCK``,
``inflatePrime``, ``inflateSetDictionary``), as zran.c does.

- ``GzipIndexer`` reads a gzip stream once, as a file of its uncompressed
  bytes (so a tar reader can parse it as it goes), and cuts it into
  ``Span``s: each starts at a block boundary at least ``span_size`` bytes of
  output after the last, and carries its checkpoint and the sha256 of its
  compressed and of its uncompressed bytes.
- ``inflate_span`` turns a span's compressed bytes back into exactly its
  uncompressed bytes, from its checkpoint.

A checkpoint keeps only the window bytes its span reads: the others are
zeroed and those before the first it reads cut off (``sparse_window``), so
a window costs what the span needs of it (a tenth of it on text) and
compresses to little more than that.

Spans are contiguous on both sides: span k's compressed bytes run from its
``in_offset`` to the next span's, and the partial byte a block starts in
belongs to the span before (its bits are kept in the checkpoint).
Concatenated gzip members are one stream. Errors are ``InflateError``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import hashlib
import sys
from collections.abc import Callable

WINDOW = 32 * 1024
_Z_OK, _Z_STREAM_END, _Z_BUF_ERROR = 0, 1, -5
_Z_NO_FLUSH, _Z_BLOCK = 0, 5
_GZIP, _RAW = 16 + 15, -15  # windowBits: a gzip wrapper, or raw deflate
_END_OF_BLOCK, _LAST_BLOCK = 128, 64  # bits of data_type after inflate(Z_BLOCK)
_PIECE = 1 << 16
_OUT = 1 << 18
_TRAILER = 8  # a gzip member ends with its CRC-32 and size


class InflateError(ValueError):
    """The compressed bytes are not a gzip stream, or not the span they should be."""


class _ZStream(ctypes.Structure):
    _fields_ = [("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_uint),
                ("total_in", ctypes.c_ulong), ("next_out", ctypes.c_void_p),
                ("avail_out", ctypes.c_uint), ("total_out", ctypes.c_ulong),
                ("msg", ctypes.c_char_p), ("state", ctypes.c_void_p),
                ("zalloc", ctypes.c_void_p), ("zfree", ctypes.c_void_p),
                ("opaque", ctypes.c_void_p), ("data_type", ctypes.c_int),
                ("adler", ctypes.c_ulong), ("reserved", ctypes.c_ulong)]


_libz = ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1")
_libz.zlibVersion.restype = ctypes.c_char_p
_STREAM = ctypes.POINTER(_ZStream)
_libz.inflateInit2_.argtypes = [_STREAM, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libz.inflate.argtypes = [_STREAM, ctypes.c_int]
_libz.inflateReset2.argtypes = [_STREAM, ctypes.c_int]
_libz.inflatePrime.argtypes = [_STREAM, ctypes.c_int, ctypes.c_int]
_libz.inflateSetDictionary.argtypes = [_STREAM, ctypes.c_char_p, ctypes.c_uint]
_libz.inflateEnd.argtypes = [_STREAM]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Where inflating can start: ``bits`` (0-7) high bits of ``byte``, the byte before
    the span's first, begin its first block; ``window`` is the output before it."""

    bits: int = 0
    byte: int = 0
    window: bytes = b""


@dataclasses.dataclass(frozen=True)
class Span:
    out_offset: int  # in the uncompressed stream
    out_length: int
    in_offset: int  # in the gzip stream
    in_length: int
    checkpoint: Checkpoint
    out_digest: bytes  # sha256 of the uncompressed bytes
    in_digest: bytes  # sha256 of the compressed bytes


class _Inflater:
    def __init__(self, window_bits: int) -> None:
        self.stream = _ZStream()
        self._ref = ctypes.byref(self.stream)
        if _libz.inflateInit2_(self._ref, window_bits, _libz.zlibVersion(),
                               ctypes.sizeof(_ZStream)) != _Z_OK:
            raise MemoryError("zlib could not start an inflater")
        self._out = ctypes.create_string_buffer(_OUT)
        self._in = None

    def feed(self, data: bytes) -> None:
        self._in = ctypes.create_string_buffer(data, len(data))  # kept while zlib reads it
        self.stream.next_in = ctypes.addressof(self._in)
        self.stream.avail_in = len(data)

    def step(self, flush: int) -> tuple[int, bytes]:
        """One inflate call: (zlib's code, the bytes it made)."""
        self.stream.next_out = ctypes.addressof(self._out)
        self.stream.avail_out = _OUT
        code = _libz.inflate(self._ref, flush)
        if code not in (_Z_OK, _Z_STREAM_END, _Z_BUF_ERROR):
            message = self.stream.msg.decode(errors="replace") if self.stream.msg else code
            raise InflateError(f"not a valid gzip stream: {message}")
        return code, ctypes.string_at(self._out, _OUT - self.stream.avail_out)

    def reset(self, window_bits: int) -> None:
        _libz.inflateReset2(self._ref, window_bits)

    def prime(self, checkpoint: Checkpoint) -> None:
        if checkpoint.bits:
            _libz.inflatePrime(self._ref, checkpoint.bits, checkpoint.byte >> (8 - checkpoint.bits))
        if checkpoint.window:
            _libz.inflateSetDictionary(self._ref, checkpoint.window, len(checkpoint.window))

    def close(self) -> None:
        _libz.inflateEnd(self._ref)


_INDEX_LOW = bytes(i & 0xFF for i in range(WINDOW))
_INDEX_HIGH = bytes(i >> 8 for i in range(WINDOW))  # 7 bits: the top one is free
_INDEX_HIGH_MARKED = bytes((i >> 8) | 0x80 for i in range(WINDOW))


def sparse_window(checkpoint: Checkpoint, compressed: bytes) -> Checkpoint:
    """``checkpoint`` with the window bytes that inflating ``compressed`` (the start of
    its span) never reads set to zero, and none before the first it reads.

    A deflate stream decodes the same whatever its window holds; only the
    bytes it copies change. So it is inflated with three made-up windows:
    each byte the low or the high bits of its own position, the high bits
    with the top bit set or clear. A byte of output that differs between
    the last two came from the window, and the first two say from where.
    Only the first 32 KiB of output can reach back into the window.
    """
    window = checkpoint.window
    if not window:
        return checkpoint

    def made_with(fake: bytes) -> bytes:
        return _inflate_prefix(dataclasses.replace(checkpoint, window=fake[:len(window)]),
                               compressed, WINDOW)

    low, high, marked = (made_with(fake)
                         for fake in (_INDEX_LOW, _INDEX_HIGH, _INDEX_HIGH_MARKED))
    kept = bytearray(len(window))
    read = _positions_read(low, high, marked)
    for position in read:
        kept[position] = window[position]
    # nothing reaches back further than the first byte read: the window starts there
    sparse = dataclasses.replace(checkpoint, window=bytes(kept[min(read, default=len(kept)):]))
    if _inflate_prefix(sparse, compressed, WINDOW) != _inflate_prefix(checkpoint, compressed,
                                                                     WINDOW):
        raise InflateError("a sparse window does not inflate as the whole one")  # a bug
    return sparse


def _positions_read(low: bytes, high: bytes, marked: bytes) -> set[int]:
    """The window positions the output copied, from the three made-up inflates (C-speed
    byte arithmetic: a Python loop over 32 KiB per checkpoint would dominate indexing)."""
    n = len(low)
    # 0x80 where the output came from the window, 0 where it is a literal
    copied = int.from_bytes(high, "little") ^ int.from_bytes(marked, "little")
    literal = int.from_bytes(b"\x80" * n, "little") ^ copied
    # each output byte's position in the window as a native 16-bit number; 0x8000 and up:
    # a literal
    low_at = 0 if sys.byteorder == "little" else 1
    codes = bytearray(2 * n)
    codes[low_at::2] = low
    codes[1 - low_at::2] = (int.from_bytes(high, "little") | literal).to_bytes(n, "little")
    return {code for code in set(memoryview(codes).cast("H")) if code < 0x8000}


def _inflate_prefix(checkpoint: Checkpoint, compressed: bytes, limit: int) -> bytes:
    """Up to ``limit`` bytes inflated from ``checkpoint``: fewer if ``compressed`` or its
    gzip member ends first."""
    inflater = _Inflater(_RAW)
    try:
        inflater.prime(checkpoint)
        inflater.feed(compressed)
        out = bytearray()
        while len(out) < limit:
            code, made = inflater.step(_Z_NO_FLUSH)
            out += made
            if code != _Z_OK or not made:
                break
        return bytes(out[:limit])
    finally:
        inflater.close()


class GzipIndexer:
    """A gzip stream read as the file of its uncompressed bytes, cut into spans meanwhile.

    ``read(n)`` as on a file; once it has returned b"", ``spans`` covers the
    whole stream and ``size`` / ``compressed_size`` are known.
    """

    def __init__(self, read: Callable[[int], bytes], span_size: int) -> None:
        if span_size <= 0:
            raise ValueError("span_size must be positive")
        self._read_compressed = read
        self.span_size = span_size
        self.spans: list[Span] = []
        self.size = self.compressed_size = 0
        self._inflater = _Inflater(_GZIP)
        self._pending = bytearray()  # made, not yet read from _pos on
        self._pos = 0
        self._window = bytearray()
        self._data = b""  # the compressed piece zlib is reading
        self._fed_from = 0  # where it begins in the stream
        self._last_byte = 0
        self._started = False
        self._start: tuple[int, int, Checkpoint] = (0, 0, Checkpoint())
        self._out_hash, self._in_hash = hashlib.sha256(), hashlib.sha256()
        self._in_hashed = 0  # compressed bytes in the span hashes so far
        # the span before, still open to take the stream's last bytes if no output follows
        # the last cut (a final empty block, say): its hash so far, and those bytes
        self._before = hashlib.sha256()
        self._tail = bytearray()
        self._done = False
        self._member_ended = False
        self._probe: bytearray | None = None  # the open span's first compressed bytes

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._pending) - self._pos < n):
            self._advance()
        end = len(self._pending) if n < 0 else min(self._pos + n, len(self._pending))
        data = bytes(self._pending[self._pos:end])
        self._pos = end
        if self._pos > _OUT:
            del self._pending[:self._pos]
            self._pos = 0
        return data

    def _advance(self) -> None:
        stream = self._inflater.stream
        if not stream.avail_in:
            self._hash_compressed_to(self._fed_from + len(self._data))
            self._fed_from += len(self._data)
            self._data = self._read_compressed(_PIECE)
            self._inflater.feed(self._data)
        code, made = self._inflater.step(_Z_BLOCK)
        consumed = len(self._data) - stream.avail_in
        if consumed:
            self._last_byte = self._data[consumed - 1]
        self.compressed_size = self._fed_from + consumed
        if made:
            self._pending += made
            self._out_hash.update(made)
            self.size += len(made)
            self._window += made
            del self._window[:-WINDOW]
        if consumed and code != _Z_STREAM_END:
            self._member_ended = False
        if code == _Z_STREAM_END:
            self._member_ended = True
            self._inflater.reset(_GZIP)  # another member may follow
        elif stream.data_type & _END_OF_BLOCK and not stream.data_type & _LAST_BLOCK:
            self._at_boundary()
        if self._probe is not None and self.size - self._start[0] >= WINDOW:
            self._sparsen()
        if not made and not self._data:
            self._finish()
        elif not made and code == _Z_BUF_ERROR and stream.avail_in:
            raise InflateError("the gzip stream makes no progress")

    def _at_boundary(self) -> None:
        if not self._started:  # the end of the first header: the first span starts here
            self._started = True
            self._start = (0, self.compressed_size, Checkpoint())
            self._in_hashed = self.compressed_size
            return
        if self.size - self._start[0] >= self.span_size:
            bits = self._inflater.stream.data_type & 7
            self._close_span()
            self._start = (self.size, self.compressed_size,
                           Checkpoint(bits, self._last_byte if bits else 0, bytes(self._window)))
            self._probe = bytearray()

    def _sparsen(self) -> None:
        """The open span's checkpoint keeps only the window bytes the span reads: its
        first compressed bytes, up to 32 KiB of output past it, say which."""
        self._hash_compressed_to(self.compressed_size)
        out_offset, in_offset, checkpoint = self._start
        self._start = (out_offset, in_offset, sparse_window(checkpoint, bytes(self._probe)))
        self._probe = None

    def _hash_compressed_to(self, end: int) -> None:
        if self._started and end > self._in_hashed:
            piece = self._data[self._in_hashed - self._fed_from:end - self._fed_from]
            self._in_hash.update(piece)
            if self._probe is not None:
                self._probe += piece
            if self.spans and self.size == self._start[0]:  # nothing made since the cut
                self._tail += piece
            self._in_hashed = end

    def _close_span(self) -> None:
        if self._probe is not None:
            self._sparsen()
        out_offset, in_offset, checkpoint = self._start
        self._hash_compressed_to(self.compressed_size)
        self.spans.append(Span(out_offset, self.size - out_offset, in_offset,
                               self.compressed_size - in_offset, checkpoint,
                               self._out_hash.digest(), self._in_hash.digest()))
        self._before, self._tail = self._in_hash, bytearray()
        self._out_hash, self._in_hash = hashlib.sha256(), hashlib.sha256()

    def _extend_last_span(self) -> None:
        """The bytes after the last cut made no output: they end the span before."""
        self._hash_compressed_to(self.compressed_size)
        last = self.spans[-1]
        self._before.update(self._tail)
        self.spans[-1] = dataclasses.replace(
            last, in_length=self.compressed_size - last.in_offset,
            in_digest=self._before.digest())

    def _finish(self) -> None:
        self._done = True
        self._inflater.close()
        if not self._started:
            raise InflateError("not a gzip stream: no deflate data")
        if not self._member_ended:
            raise InflateError(f"the gzip stream is truncated at byte {self.compressed_size}")
        if self.size > self._start[0] or not self.spans:
            self._close_span()
        else:
            self._extend_last_span()


def inflate_span(checkpoint: Checkpoint, compressed: bytes, length: int) -> bytes:
    """A span's ``length`` uncompressed bytes from its compressed ones, entered at its
    checkpoint; InflateError when they do not inflate to exactly that many."""
    inflater = _Inflater(_RAW)
    try:
        inflater.prime(checkpoint)
        inflater.feed(compressed)
        parts, got, skip = [], 0, _TRAILER
        while got <= length:
            code, made = inflater.step(_Z_NO_FLUSH)
            parts.append(made)
            got += len(made)
            if code == _Z_STREAM_END:  # a member ends: enter the next, past its trailer
                rest = compressed[len(compressed) - inflater.stream.avail_in + skip:]
                if not rest:
                    break
                inflater.reset(_GZIP)
                inflater.feed(rest)
                compressed, skip = rest, 0  # a gzip inflater reads its trailer itself
            elif not made:
                break
    finally:
        inflater.close()
    data = b"".join(parts)
    if len(data) != length:
        raise InflateError(f"the span inflates to {len(data)} bytes or more, not {length}")
    return data
