"""Thread pools kept per process, by name: a forked child makes its own (threads do not
survive a fork, and a pool inherited without them would never run its work)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[str, tuple[int, ThreadPoolExecutor]] = {}
_LOCK = threading.Lock()


def process_pool(name: str, threads: int) -> ThreadPoolExecutor:
    """This process's pool ``name`` of ``threads`` threads, made at the first call."""
    with _LOCK:
        found = _POOLS.get(name)
        if found is None or found[0] != os.getpid():
            found = _POOLS[name] = (os.getpid(), ThreadPoolExecutor(threads, name))
        return found[1]
