"""A small bounded map that forgets what was used least recently.

Thread-safe. Each value weighs ``weight(value)`` (1 by default) and the
map never holds more than ``capacity`` in all; a value heavier than the
whole capacity is not kept at all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MISSING = object()


class Lru(Generic[K, V]):
    def __init__(self, capacity: int, weight: Callable[[V], int] = lambda _: 1) -> None:
        self.capacity = capacity
        self._weight = weight
        self._held = 0
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, default: object = None) -> V | object:
        """The value of ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value of ``key``, made (outside the lock) and kept when missing."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = make()
            self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        weight = self._weight(value)
        if weight > self.capacity:
            return
        with self._lock:
            old = self._items.pop(key, _MISSING)
            if old is not _MISSING:
                self._held -= self._weight(old)
            self._items[key] = value
            self._held += weight
            while self._held > self.capacity:
                self._held -= self._weight(self._items.popitem(last=False)[1])

    def __len__(self) -> int:
        return len(self._items)
