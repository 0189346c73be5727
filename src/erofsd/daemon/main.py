"""Run the daemon: one trio event loop serving the API and the fanotify events."""

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
from .service import Daemon

log = logging.getLogger("erofsd.daemon")
DEFAULT_SOCKET = "/run/erofsd/erofsd.sock"


def default_socket() -> str:
    return os.environ.get("EROFSD_SOCKET") or DEFAULT_SOCKET


class JsonLines(logging.Formatter):
    """Structured logs: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def run(state_dir: str, socket_path: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    trio.run(_main, state_dir, socket_path)


async def _main(state_dir: str, socket_path: str) -> None:
    daemon = Daemon(state_dir, socket_path)
    failover = False
    if daemon.holder is not None:
        await daemon.holder.connect()
        failover = "cachefiles" in daemon.holder.kept
    if daemon.fscache is not None:
        await daemon.fscache.start()
    if daemon.fanotify is None:
        log.warning("fanotify is not available (%s); mounts use %s", daemon.fanotify_problem,
                    "fscache" if daemon.fscache else "FUSE")
    try:
        async with trio.open_nursery() as nursery:
            def stop_soon() -> None:  # after the reply to /v1/stop has gone out
                nursery.start_soon(_cancel_later, nursery.cancel_scope)

            if daemon.fanotify is not None:  # first: restoring mounts raises events too
                await nursery.start(daemon.fanotify.serve)
            if daemon.fscache is not None:
                await nursery.start(daemon.fscache.serve)
            await daemon.restore()
            if daemon.fanotify is not None:
                daemon.fanotify.ready.set()
            if failover:  # a daemon before us died: have the kernel resend its requests
                daemon.fscache.restore()
            await nursery.start(serve, socket_path, Api(daemon, stop_soon).handle)
            nursery.start_soon(_on_signals, daemon, nursery.cancel_scope)
            log.info("erofsd daemon %d ready on %s (state %s)", os.getpid(), socket_path,
                     state_dir)
    finally:
        if os.path.exists(socket_path):
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
