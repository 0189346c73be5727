"""Run the daemon: one trio event loop serving the API, the data paths and signals.

Order matters. The state directory's lock comes first, so a second daemon
stops before it touches anything; then the control socket, so a client that
asks while the daemon takes its mounts back finds it (status answers at
once, other requests wait) instead of starting a second daemon; then the
holder, the data paths and the recorded mounts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

import trio

from ..errors import Busy
from .api import Api, serve
from .protocol import check_socket_path
from .service import Daemon
from .statelock import StateLock

log = logging.getLogger("erofsd.daemon")


class JsonLines(logging.Formatter):
    """Structured logs: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def log_json_lines() -> None:
    """A long-running service's logging: JSON lines on stderr, INFO and up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def run(state_dir: str, socket_path: str, *, cache_max_size: int | None = None,
        auth_file: str | None = None) -> None:
    """Serve until stopped; a second daemon or a bad socket path raise before anything."""
    StateLock(state_dir).acquire(socket_path)
    check_socket_path(socket_path)
    if auth_file:
        os.environ["REGISTRY_AUTH_FILE"] = auth_file  # where the registry client looks
    log_json_lines()
    trio.run(_main, state_dir, socket_path, cache_max_size)


async def _main(state_dir: str, socket_path: str, cache_max_size: int | None) -> None:
    daemon = Daemon(state_dir, socket_path, cache_max_size=cache_max_size)
    for name, problem in daemon.unavailable.items():
        log.warning("%s mode is not available: %s", name, problem)
    listening = False
    try:
        async with trio.open_nursery() as nursery:
            def stop_soon() -> None:  # after the reply to /v1/stop has gone out
                nursery.start_soon(_cancel_later, nursery.cancel_scope)

            await nursery.start(serve, socket_path, Api(daemon, stop_soon).handle)
            listening = True
            await daemon.start(nursery)
            nursery.start_soon(_on_signals, daemon, nursery.cancel_scope)
            if cache_max_size is not None:
                nursery.start_soon(daemon.keep_cache_under, cache_max_size)
            log.info("erofsd daemon %d ready on %s (state %s)", os.getpid(), socket_path,
                     state_dir)
    finally:
        if listening and os.path.exists(socket_path):
            os.unlink(socket_path)
        log.info("erofsd daemon %d stopped", os.getpid())


async def _cancel_later(scope: trio.CancelScope) -> None:
    await trio.sleep(0.2)
    scope.cancel()


async def _on_signals(daemon: Daemon, scope: trio.CancelScope) -> None:
    """SIGTERM/SIGINT: unmount what is idle; a busy mount stays for the next daemon."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %d: stopping", signum)
            try:
                await daemon.stop(keep_mounts=False)
            except Busy as e:
                log.warning("%s", e)
            scope.cancel()
            return
