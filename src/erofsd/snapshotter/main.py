"""Run the snapshotter: one gRPC server on a Unix socket, until SIGTERM or SIGINT.

The root directory holds the snapshot tree (``metadata.db``), the
directories of ordinary snapshots and the mount points of erofsd images; a
lock keeps it to one snapshotter. Containers do not depend on this process:
their overlays are mounted by containerd and their images by the erofsd
daemon, so the snapshotter can be restarted (or killed) under them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc

from ..config import Config
from ..containerd.api.services.snapshots.v1 import snapshots_pb2_grpc
from ..daemon.main import log_json_lines
from ..daemon.protocol import check_socket_path
from ..errors import Busy
from .daemonlink import DaemonLink
from .service import SnapshotService
from .store import Store

log = logging.getLogger("erofsd.snapshotter")
WORKERS = 16


def _lock(root: Path) -> int:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Busy(f"another erofsd snapshotter serves {root}") from None
    return fd


def run(config: Config) -> None:
    root = Path(config.snapshotter_root)
    address = config.snapshotter_address
    _lock(root)
    check_socket_path(address)
    log_json_lines()
    store = Store(root / "metadata.db")
    service = SnapshotService(store, root, DaemonLink(config), config)
    service.cleanup()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS))
    snapshots_pb2_grpc.add_SnapshotsServicer_to_server(service, server)
    os.makedirs(os.path.dirname(address) or ".", mode=0o755, exist_ok=True)
    if os.path.lexists(address):
        os.unlink(address)  # a dead snapshotter's socket, as check_socket_path found
    old = os.umask(0o177)
    try:
        server.add_insecure_port(f"unix://{address}")
        server.start()
    finally:
        os.umask(old)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    log.info("erofsd snapshotter %d serving %s on %s", os.getpid(), root, address)
    stopping.wait()
    server.stop(grace=5).wait()
    store.close()
    if os.path.exists(address):
        os.unlink(address)
    log.info("erofsd snapshotter %d stopped", os.getpid())
