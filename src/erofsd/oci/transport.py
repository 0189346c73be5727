"""HTTP for sources: keep-alive, bounded concurrency, retries with backoff, a deadline.

Every remote source goes through ``Transport.call``. It runs an attempt
function, retries what can be retried (connection errors, timeouts, 5xx,
429, short or malformed replies), backs off exponentially with jitter, and
gives up at the total deadline. The HTTP client's errors are translated
here, once, into the erofsd tree; nothing above sees them.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import ErofsdError, NotFound, SourceError, SourceTimeout
from ..httpclient import Client, Response, Timeout, TransportError

log = logging.getLogger("erofsd.oci.transport")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.05
    max_delay: float = 2.0
    deadline: float = 60.0  # seconds for one operation, all attempts included
    connect_timeout: float = 5.0
    read_timeout: float = 10.0  # a stalled reply counts as a failed attempt after this


class Retryable(SourceError):
    """An attempt failed in a way another attempt may not (5xx, reset, short body)."""


class Transport:
    def __init__(self, *, insecure: bool = False, policy: RetryPolicy | None = None,
                 max_concurrency: int = 8, verify_tls: bool = True) -> None:
        self.insecure = insecure
        self.policy = policy or RetryPolicy()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self.client = Client(connect_timeout=self.policy.connect_timeout,
                             read_timeout=self.policy.read_timeout, verify_tls=verify_tls,
                             max_idle=max_concurrency, headers={"User-Agent": "erofsd"})

    @property
    def scheme(self) -> str:
        return "http" if self.insecure else "https"

    def close(self) -> None:
        self.client.close()

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until it succeeds, fails for good, or the deadline passes."""
        policy = self.policy
        deadline = time.monotonic() + policy.deadline
        last: Exception | None = None
        for n in range(policy.attempts):
            try:
                with self._slots:
                    return attempt()
            except Retryable as e:
                last = e
            except Timeout as e:
                last = SourceTimeout(f"{what}: {e}")
            except TransportError as e:
                last = Retryable(f"{what}: {e}")
            delay = min(policy.max_delay, policy.base_delay * 2 ** n) * random.uniform(0.5, 1.5)
            if time.monotonic() + delay >= deadline:
                break
            log.info("retrying %s in %.2fs after: %s", what, delay, last)
            time.sleep(delay)
        assert last is not None
        if isinstance(last, ErofsdError) and not isinstance(last, Retryable):
            raise last
        raise SourceError(f"{what}: failed after retries: {last}", errno=getattr(last, "errno", 5))


def check_status(response: Response, what: str) -> None:
    """Raise for an error status: retryable for 5xx and 429, final otherwise."""
    code = response.status_code
    if code < 400:
        return
    if code >= 500 or code == 429:
        raise Retryable(f"{what}: HTTP {code}")
    raise SourceError(f"{what}: HTTP {code} {_reason(response)}")


def _reason(response: Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)[:300]
    except Exception:
        return response.reason_phrase


def take_range(response: Response, offset: int, length: int, what: str) -> bytes:
    """The bytes [offset, offset+length) from the reply to a Range request.

    A 206 counts only with a Content-Range naming exactly those bytes; a 200
    (a server that ignores Range) is streamed and only the wanted part kept.
    """
    code = response.status_code
    if code == 206:
        _check_content_range(response.headers.get("Content-Range", ""), offset,
                             offset + length - 1, what)
        return _read_exact(response, length, what)
    if code == 200:
        return _slice_stream(response, offset, length, what)
    if code == 404:
        raise NotFound(f"{what}: no such blob")
    if code == 416:
        raise SourceError(f"{what}: range not satisfiable")
    response.read()
    check_status(response, what)
    raise Retryable(f"{what}: unexpected HTTP {code}")


def _check_content_range(header: str, first: int, last: int, what: str) -> None:
    match = _CONTENT_RANGE.match(header.strip())
    if not match or int(match.group(1)) != first or int(match.group(2)) != last:
        raise Retryable(f"{what}: Content-Range {header!r} does not match the request")


def _read_exact(response: Response, length: int, what: str) -> bytes:
    pieces, total = [], 0
    for piece in response.iter_bytes(length + 1):  # one piece when the reply is right
        total += len(piece)
        if total > length:
            raise Retryable(f"{what}: reply longer than the {length} bytes asked for")
        pieces.append(piece)
    if total != length:
        raise Retryable(f"{what}: short reply ({total} of {length} bytes)")
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _slice_stream(response: Response, offset: int, length: int, what: str) -> bytes:
    """From a whole-blob reply keep [offset, offset+length); stop reading once we have it."""
    data = bytearray()
    position = 0
    for piece in response.iter_bytes():
        start = max(offset - position, 0)
        if start < len(piece):
            data += piece[start:start + length - len(data)]
        position += len(piece)
        if len(data) == length:
            return bytes(data)
    raise Retryable(f"{what}: whole-blob reply ended at byte {position}")
