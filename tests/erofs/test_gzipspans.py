"""A gzip stream cut into spans and entered at each: every byte, every level, every member."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import random
import subprocess
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erofsd.erofs.gzipspans import WINDOW, GzipIndexer, InflateError, inflate_span

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TEXT = b"".join(p.read_bytes() for p in sorted(STDLIB.rglob("*.py"))[:400])
RANDOM = random.Random(3).randbytes(2 << 20)


def indexed(gz: bytes, span_size: int, read_size: int = 7777) -> tuple[GzipIndexer, bytes]:
    indexer = GzipIndexer(io.BytesIO(gz).read, span_size)
    out = bytearray()
    while piece := indexer.read(read_size):
        out += piece
    return indexer, bytes(out)


def check_spans(raw: bytes, gz: bytes, span_size: int, read_size: int = 7777) -> int:
    """The stream reads back whole; the spans tile it on both sides; each one inflates
    alone, from its checkpoint, to its bytes, and both digests hold."""
    indexer, out = indexed(gz, span_size, read_size)
    assert out == raw and (indexer.size, indexer.compressed_size) == (len(raw), len(gz))
    spans = indexer.spans
    assert (spans[0].out_offset, spans[-1].in_offset + spans[-1].in_length) == (0, len(gz))
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.out_offset + a.out_length == b.out_offset
        assert a.in_offset + a.in_length == b.in_offset
        assert a.out_length >= span_size  # cut at the first block boundary past the size
    for span in spans:
        stored = gz[span.in_offset:span.in_offset + span.in_length]
        assert hashlib.sha256(stored).digest() == span.in_digest
        data = inflate_span(span.checkpoint, stored, span.out_length)
        assert data == raw[span.out_offset:span.out_offset + span.out_length]
        assert hashlib.sha256(data).digest() == span.out_digest
    return len(spans)


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("data", ["text", "random", "mixed"])
def test_python_gzip_at_every_level(data, level):
    raw = {"text": TEXT, "random": RANDOM,
           "mixed": TEXT[:1 << 20] + RANDOM[:1 << 20] + TEXT[1 << 20:]}[data]
    spans = check_spans(raw, gzip.compress(raw, compresslevel=level, mtime=0), 1 << 20)
    assert spans >= len(raw) // (2 << 20)


def test_gnu_gzip_and_small_spans():
    gz = subprocess.run(["gzip", "-9", "-c"], input=TEXT[:3 << 20], capture_output=True,
                        check=True).stdout
    # spans can be no finer than gzip's blocks (for -9 on text, about 240 KB of output)
    assert check_spans(TEXT[:3 << 20], gz, 64 << 10) > 6


def test_concatenated_members_are_one_stream():
    parts = [TEXT[:1 << 20], TEXT[1 << 20:3 << 20], b"", RANDOM[:100_000]]
    gz = b"".join(gzip.compress(p) for p in parts)
    assert check_spans(b"".join(parts), gz, 256 << 10, read_size=-1) > 5


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=20_000), st.integers(1, 9), st.integers(1, 5000))
def test_any_bytes_any_span_size(raw, level, span_size):
    check_spans(raw, gzip.compress(raw, compresslevel=level, mtime=0), span_size)


def test_truncated_or_corrupt_streams_are_errors():
    gz = gzip.compress(TEXT)
    for cut in (5, 100, len(gz) // 2, len(gz) - 3):
        with pytest.raises(InflateError, match="truncated|no deflate data"):
            indexed(gz[:cut], 1 << 20)
    damaged = bytearray(gz)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(InflateError):
        indexed(bytes(damaged), 1 << 20)
    with pytest.raises(InflateError, match="not a valid gzip stream"):
        indexed(b"PK\x03\x04 a zip file" * 100, 1 << 20)


def test_a_span_refuses_bytes_that_are_not_its_own():
    gz = gzip.compress(TEXT)
    indexer, _ = indexed(gz, 512 << 10)
    first, second = indexer.spans[0], indexer.spans[1]
    short = gz[second.in_offset:second.in_offset + second.in_length - 50]
    with pytest.raises(InflateError, match="inflates to"):
        inflate_span(second.checkpoint, short, second.out_length)
    other = gz[first.in_offset:first.in_offset + second.in_length]  # the right size, other bytes
    try:
        data = inflate_span(second.checkpoint, other, second.out_length)
    except InflateError:
        return
    assert hashlib.sha256(data).digest() != second.out_digest  # the digest catches it


def test_bytes_after_the_last_cut_that_make_no_output_end_the_span_before():
    """Go's gzip ends with an empty block after a flush: no output follows the last cut."""
    import zlib
    raw = TEXT[:600_000]
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    body = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
    gz = body + compressor.flush(zlib.Z_FINISH)  # an empty final block, then the trailer
    for span_size in (1, 100_000, len(raw)):
        check_spans(raw, gz, span_size)


def test_a_checkpoint_keeps_only_the_window_bytes_its_span_reads():
    gz = gzip.compress(TEXT, compresslevel=6, mtime=0)
    indexer, _ = indexed(gz, 64 << 10)
    entered = [s for s in indexer.spans if s.checkpoint.window]
    assert len(entered) > 10
    kept = sum(sum(1 for b in s.checkpoint.window if b) for s in entered)
    assert kept < 0.5 * WINDOW * len(entered)  # about a tenth, on text
    span = entered[len(entered) // 2]
    window = bytearray(span.checkpoint.window)
    assert window[0]  # the window starts at the first byte the span reads
    stored = gz[span.in_offset:span.in_offset + span.in_length]
    for position in random.Random(5).sample([i for i, b in enumerate(window) if b], 20):
        changed = bytearray(window)
        changed[position] ^= 0xFF  # a byte kept is a byte read: the span comes out otherwise
        other = dataclasses.replace(span.checkpoint, window=bytes(changed))
        assert inflate_span(other, stored, span.out_length) != \
            inflate_span(span.checkpoint, stored, span.out_length)
