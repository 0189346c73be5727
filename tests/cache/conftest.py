"""Fixtures of the cache's fault tests: a faulty proxy, and retries that do not dawdle."""

from __future__ import annotations

import os

import pytest

from erofsd.oci import source as source_module
from erofsd.oci.transport import RetryPolicy, Transport
from faultproxy import FaultProxy


@pytest.fixture
def faulty(registry):
    """A fault proxy in front of the registry, at FAULT_RATE (0 shows what faults cost)."""
    rate = float(os.environ.get("FAULT_RATE", "0.35"))
    p = FaultProxy(registry.host, seed=3, rate=rate, stall_seconds=0.6)
    yield p
    p.stop()


@pytest.fixture
def fast_retries(monkeypatch):
    """Short timeouts so stalls cost little; the retry logic itself is unchanged."""
    policy = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.1, deadline=10,
                         connect_timeout=1, read_timeout=0.3)
    monkeypatch.setattr(source_module, "make_transport",
                        lambda insecure=False, **kw: Transport(insecure=insecure, policy=policy))
    original = Transport.__init__

    def patched(self, *, insecure=False, policy=None, **kw):
        original(self, insecure=insecure, policy=policy or RetryPolicy(
            attempts=6, base_delay=0.01, max_delay=0.1, deadline=10, connect_timeout=1,
            read_timeout=0.3), **kw)
    monkeypatch.setattr(Transport, "__init__", patched)
