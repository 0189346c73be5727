"""The containerd snapshots.v1 service: ordinary snapshots kept here, erofsd layers mounted.

Keys arrive as containerd's metadata store makes them, ``<namespace>/<n>/<key>``.
A Prepare whose labels name an erofsd layer (``layers.remote_layer``) never
makes an active snapshot containerd could unpack into: a blob layer is
committed at once (it has nothing here), the bootstrap layer is committed
once the daemon has mounted the image, and both are answered ALREADY_EXISTS
with a committed snapshot that carries the ``containerd.io/snapshot.ref``
label and the parent containerd asked for, so containerd fetches no layer.
Anything that fails on the way is undone before the answer: no half-made
snapshot is left for containerd to find.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from ..config import Config
from ..containerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from ..containerd.api.services.snapshots.v1 import snapshots_pb2_grpc
from ..containerd.api.types import mount_pb2
from ..containerd.labels import INDEX
from ..errors import (
    AlreadyExists,
    AuthError,
    Busy,
    ErofsdError,
    InvalidArgument,
    NotFound,
    SourceError,
)
from . import filters
from .daemonlink import DaemonLink
from .layers import RemoteLayer, check_labels, remote_layer
from .mounts import snapshot_mounts
from .store import Snapshot, Store
from .twins import Twins

log = logging.getLogger("erofsd.snapshotter")
KINDS = {"view": pb.VIEW, "active": pb.ACTIVE, "committed": pb.COMMITTED}
LIST_BATCH = 100


def status_of(error: Exception) -> grpc.StatusCode:
    """The gRPC code containerd maps back to its own error kinds (errdefs.FromGRPC)."""
    for cls, code in ((NotFound, grpc.StatusCode.NOT_FOUND),
                      (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
                      (Busy, grpc.StatusCode.FAILED_PRECONDITION),
                      (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
                      (AuthError, grpc.StatusCode.PERMISSION_DENIED),
                      (SourceError, grpc.StatusCode.UNAVAILABLE)):
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _answers(method):
    """Errors become gRPC statuses with their message; a bug is INTERNAL and logged."""
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ErofsdError as e:
            context.abort(status_of(e), str(e))
        except OSError as e:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{e.filename or ''} {e.strerror or e}")
    wrapper.__name__ = method.__name__
    return wrapper


def namespace_of(key: str) -> str:
    namespace, sep, _ = key.partition("/")
    if not sep or not namespace:
        raise InvalidArgument(f"snapshot key {key!r} is not <namespace>/<n>/<key>")
    return namespace


class SnapshotService(snapshots_pb2_grpc.SnapshotsServicer):
    def __init__(self, store: Store, root: Path, daemon: DaemonLink, config: Config) -> None:
        self.store = store
        self.root = root
        self.daemon = daemon
        self.config = config
        for directory in (root / "snapshots", root / "mounts"):
            directory.mkdir(parents=True, exist_ok=True)
        self._remote = threading.Lock()  # one erofsd layer at a time: one mount per image
        self.twins = Twins(config)

    # -- paths -----------------------------------------------------------------------------

    def _dir(self, snapshot: Snapshot) -> Path:
        return self.root / "snapshots" / str(snapshot.id)

    def _lowers(self, parent: str) -> list[str]:
        """The directories under a snapshot, nearest first; an erofsd image is one of them."""
        lowers: list[str] = []
        skipped = []
        key = parent
        while key:
            snapshot = self.store.get(key)
            if snapshot.remote == "image":
                lowers.append(self.daemon.ensure_mounted(snapshot))
                return lowers
            if snapshot.remote == "blob":
                skipped.append(snapshot.key)
            else:
                lowers.append(str(self._dir(snapshot) / "fs"))
            key = snapshot.parent
        if skipped:
            raise Busy(f"{skipped[0]} is a part of an erofsd image whose bootstrap layer is "
                       "not below it: only the image as a whole can be used")
        return lowers

    def _mounts(self, snapshot: Snapshot) -> list[mount_pb2.Mount]:
        if snapshot.kind == "committed":
            raise Busy(f"snapshot {snapshot.key} is committed: it has no mounts")
        here = self._dir(snapshot)
        found = snapshot_mounts(snapshot.kind, str(here / "fs"), str(here / "work"),
                                self._lowers(snapshot.parent))
        return [mount_pb2.Mount(type=m["type"], source=m["source"], options=m["options"])
                for m in found]

    # -- snapshots kept here -------------------------------------------------------------

    def _create(self, key: str, parent: str, kind: str, labels: dict[str, str]) -> Snapshot:
        namespace_of(key)
        check_labels(labels)
        with self.store.transaction() as db:
            snapshot = self.store.insert(db, key, parent, kind, labels)
            self._lowers(parent)  # a chain that cannot be used is refused before any file
            here = self._dir(snapshot)
            (here / "fs").mkdir(parents=True, exist_ok=True)
            if kind == "active":
                (here / "work").mkdir(exist_ok=True)
        return snapshot

    @_answers
    def Prepare(self, request, context):
        labels = dict(request.labels)
        layer = remote_layer(labels) or self.twins.layer(labels)
        if layer is not None:
            name = self._prepare_remote(request.key, request.parent, labels, layer)
            context.abort(grpc.StatusCode.ALREADY_EXISTS,
                          f"target snapshot {layer.target}: an erofsd layer, committed as {name}")
        snapshot = self._create(request.key, request.parent, "active", labels)
        return pb.PrepareSnapshotResponse(mounts=self._mounts(snapshot))

    @_answers
    def View(self, request, context):
        snapshot = self._create(request.key, request.parent, "view", dict(request.labels))
        return pb.ViewSnapshotResponse(mounts=self._mounts(snapshot))

    @_answers
    def Mounts(self, request, context):
        return pb.MountsResponse(mounts=self._mounts(self.store.get(request.key)))

    @_answers
    def Commit(self, request, context):
        snapshot = self.store.get(request.key)
        if snapshot.kind != "active":
            raise Busy(f"snapshot {request.key} is {snapshot.kind}: only an active one commits")
        labels = dict(request.labels) or snapshot.labels
        check_labels(labels)
        if self.store.find(request.name) is not None:
            raise AlreadyExists(f"snapshot {request.name} already exists")
        with self.store.transaction() as db:
            snapshot.key, snapshot.kind, snapshot.labels = request.name, "committed", labels
            self.store.set(db, snapshot)
        shutil.rmtree(self._dir(snapshot) / "work", ignore_errors=True)
        return empty_pb2.Empty()

    @_answers
    def Remove(self, request, context):
        snapshot = self.store.get(request.key)
        if self.store.has_children(snapshot.key):
            raise Busy(f"snapshot {snapshot.key} has children: remove them first")
        if snapshot.remote == "image":
            self.daemon.release(snapshot)  # the daemon unmounts, the cookies go
        with self.store.transaction() as db:
            self.store.delete(db, snapshot)
        self._drop_files(snapshot)
        return empty_pb2.Empty()

    def _drop_files(self, snapshot: Snapshot) -> None:
        if not snapshot.remote:
            shutil.rmtree(self._dir(snapshot), ignore_errors=True)
        elif snapshot.mountpoint and not os.path.ismount(snapshot.mountpoint):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(snapshot.mountpoint)

    # -- erofsd layers ---------------------------------------------------------------------

    def _prepare_remote(self, key: str, parent: str, labels: dict[str, str],
                        layer: RemoteLayer) -> str:
        """Commit the layer's snapshot (mounting the image for a bootstrap); its name."""
        namespace = namespace_of(key)
        check_labels(labels)
        name = f"{namespace}/erofsd/{layer.target}"
        with self._remote:
            done = self.store.find(name)
            if done is not None and done.parent == parent:
                return name  # asked again (containerd retried, or another image shares it)
            if layer.kind == "blob":
                with self.store.transaction() as db:
                    self.store.insert(db, name, parent, "committed", labels, remote="blob")
                return name
            if layer.index:  # found by the snapshotter (CRI): kept for the daemon's mount
                labels = {**labels, INDEX: layer.index}
            with self.store.transaction() as db:
                snapshot = self.store.insert(db, key, parent, "active", labels, remote="image",
                                             image=layer.image)
                snapshot.mountpoint = str(self.root / "mounts" / str(snapshot.id))
                self.store.set(db, snapshot)
            try:
                os.makedirs(snapshot.mountpoint, exist_ok=True)
                self.daemon.mount(snapshot, namespace)
            except BaseException:
                with self.store.transaction() as db:
                    self.store.delete(db, snapshot)
                self._drop_files(snapshot)
                raise
            with self.store.transaction() as db:
                snapshot.key, snapshot.kind = name, "committed"
                self.store.set(db, snapshot)
            log.info("mounted %s for %s at %s", layer.image, name, snapshot.mountpoint)
            return name

    # -- views -------------------------------------------------------------------------------

    @staticmethod
    def _info(snapshot: Snapshot) -> pb.Info:
        created, updated = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
        created.FromNanoseconds(int(snapshot.created * 1e9))
        updated.FromNanoseconds(int(snapshot.updated * 1e9))
        return pb.Info(name=snapshot.key, parent=snapshot.parent, kind=KINDS[snapshot.kind],
                       created_at=created, updated_at=updated, labels=snapshot.labels)

    @_answers
    def Stat(self, request, context):
        return pb.StatSnapshotResponse(info=self._info(self.store.get(request.key)))

    @_answers
    def Update(self, request, context):
        snapshot = self.store.get(request.info.name)
        paths = list(request.update_mask.paths) or ["labels"]
        labels = dict(snapshot.labels)
        for path in paths:
            if path == "labels":
                labels = dict(request.info.labels)
            elif path.startswith("labels."):
                key = path[len("labels."):]
                if key in request.info.labels:
                    labels[key] = request.info.labels[key]
                else:
                    labels.pop(key, None)
            else:
                raise InvalidArgument(f"cannot update {path!r}: only labels change")
        check_labels(labels)
        with self.store.transaction() as db:
            snapshot.labels = labels
            self.store.set(db, snapshot)
        return pb.UpdateSnapshotResponse(info=self._info(snapshot))

    @_answers
    def List(self, request, context) -> Iterator[pb.ListSnapshotsResponse]:
        match = filters.matcher(list(request.filters))
        batch = []
        for snapshot in self.store.all():
            if match(lambda path, s=snapshot: _field(s, path)):
                batch.append(self._info(snapshot))
            if len(batch) == LIST_BATCH:
                yield pb.ListSnapshotsResponse(info=batch)
                batch = []
        if batch:
            yield pb.ListSnapshotsResponse(info=batch)

    @_answers
    def Usage(self, request, context):
        snapshot = self.store.get(request.key)
        if snapshot.remote:
            return pb.UsageResponse(size=0, inodes=0)  # its bytes are the erofsd cache's
        size, inodes = disk_usage(self._dir(snapshot) / "fs")
        return pb.UsageResponse(size=size, inodes=inodes)

    @_answers
    def Cleanup(self, request, context):
        self.cleanup()
        return empty_pb2.Empty()

    def cleanup(self) -> None:
        """Whatever a crash left: half-made erofsd layers, directories without a row."""
        for snapshot in self.store.all():
            if snapshot.remote == "image" and snapshot.kind != "committed":
                log.warning("removing %s: its image was being mounted when we stopped",
                            snapshot.key)
                self.daemon.release(snapshot)
                with self.store.transaction() as db:
                    self.store.delete(db, snapshot)
                self._drop_files(snapshot)
        ids = {str(i) for i in self.store.ids()}
        for directory in (self.root / "snapshots").iterdir():
            if directory.name not in ids:
                shutil.rmtree(directory, ignore_errors=True)
        for mountpoint in (self.root / "mounts").iterdir():
            if mountpoint.name not in ids and not os.path.ismount(mountpoint):
                shutil.rmtree(mountpoint, ignore_errors=True)


def _field(snapshot: Snapshot, path: list[str]) -> tuple[str, bool]:
    """A snapshot's field for containerd's filters (its metadata adaptor's names)."""
    if not path:
        return "", False
    if path[0] == "kind":
        return snapshot.kind, True
    if path[0] == "name":
        return snapshot.key, True
    if path[0] == "parent":
        return snapshot.parent, True
    if path[0] == "labels" and snapshot.labels:
        key = ".".join(path[1:])
        return snapshot.labels.get(key, ""), key in snapshot.labels
    return "", False


def disk_usage(path: Path) -> tuple[int, int]:
    """Bytes of disk (each inode once) and inodes under ``path``, as containerd counts."""
    seen: set[tuple[int, int]] = set()
    size = 0
    for directory, dirnames, filenames in os.walk(path):
        names = [*dirnames, *filenames] + (["."] if directory == str(path) else [])
        for name in names:
            try:
                st = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_blocks * 512
    return size, len(seen)
