"""Human sizes: parse "1M", "64KiB", "4096"; print 1.5 MiB."""

from __future__ import annotations

import re

from .errors import InvalidArgument

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.match(str(text))
    if not match:
        raise InvalidArgument(f"not a size: {text!r} (examples: 4096, 64K, 1M, 2GiB)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
