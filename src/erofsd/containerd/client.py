"""A small client of containerd's gRPC API: what a pull needs, in one namespace.

Content (write a blob with labels), images (create or update a record),
leases (keep what a pull writes from GC until the image holds it) and
snapshots (through containerd's metadata, with a snapshotter's name). gRPC
errors become erofsd errors at one boundary, ``_call``.
"""

from __future__ import annotations

import contextlib
import datetime
import secrets
from collections.abc import Iterator

import grpc

from ..errors import AlreadyExists, ErofsdError, InvalidArgument, NotFound, SourceError
from .api.services.content.v1 import content_pb2, content_pb2_grpc
from .api.services.images.v1 import images_pb2, images_pb2_grpc
from .api.services.leases.v1 import leases_pb2, leases_pb2_grpc
from .api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from .api.types import descriptor_pb2
from .labels import LEASE_HEADER, NAMESPACE_HEADER

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
GC_EXPIRE = "containerd.io/gc.expire"


class ContainerdUnavailable(SourceError):
    """containerd does not answer on its socket."""


def _error(e: grpc.RpcError, what: str) -> ErofsdError:
    code, detail = e.code(), e.details()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what}: {detail}")
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(f"{what}: {detail}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"{what}: {detail}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return ContainerdUnavailable(f"{what}: containerd is unavailable ({detail})")
    return ErofsdError(f"{what}: {code.name.lower()}: {detail}")


class Containerd:
    def __init__(self, address: str = DEFAULT_ADDRESS, namespace: str = "default",
                 timeout: float = 120) -> None:
        self.address, self.namespace, self.timeout = address, namespace, timeout
        self._channel = grpc.insecure_channel(f"unix://{address}")
        self._content = content_pb2_grpc.ContentStub(self._channel)
        self._images = images_pb2_grpc.ImagesStub(self._channel)
        self._leases = leases_pb2_grpc.LeasesStub(self._channel)
        self._snapshots = snapshots_pb2_grpc.SnapshotsStub(self._channel)
        self.lease: str | None = None

    def close(self) -> None:
        self._channel.close()

    def _metadata(self) -> list[tuple[str, str]]:
        headers = [(NAMESPACE_HEADER, self.namespace)]
        if self.lease:
            headers.append((LEASE_HEADER, self.lease))
        return headers

    def _call(self, what: str, method, request):
        try:
            return method(request, metadata=self._metadata(), timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(e, what) from None

    # -- leases ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def leased(self, hours: float = 1) -> Iterator[None]:
        """Everything written meanwhile is safe from containerd's GC, until the lease goes."""
        expire = (datetime.datetime.now(datetime.UTC)
                  + datetime.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lease = self._call("create a lease", self._leases.Create, leases_pb2.CreateRequest(
            id=f"erofsd-pull-{secrets.token_hex(8)}", labels={GC_EXPIRE: expire})).lease.id
        self.lease = lease
        try:
            yield
        finally:
            self.lease = None
            self._call("delete the lease", self._leases.Delete,
                       leases_pb2.DeleteRequest(id=lease))

    # -- content -----------------------------------------------------------------------------

    def write_blob(self, data: bytes, digest: str, labels: dict[str, str]) -> None:
        """Store ``data`` (it must match ``digest``) with ``labels``; kept if already there."""
        request = content_pb2.WriteContentRequest(
            action=content_pb2.COMMIT, ref=f"erofsd-{digest}", total=len(data), expected=digest,
            offset=0, data=data, labels=labels)
        try:
            for _ in self._content.Write(iter([request]), metadata=self._metadata(),
                                         timeout=self.timeout):
                pass
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise _error(e, f"write {digest} to containerd's content store") from None
            self._call(f"label {digest}", self._content.Update, content_pb2.UpdateRequest(
                info=content_pb2.Info(digest=digest, labels=labels),
                update_mask={"paths": [f"labels.{k}" for k in labels]}))

    # -- images ------------------------------------------------------------------------------

    def put_image(self, name: str, media_type: str, digest: str, size: int) -> None:
        image = images_pb2.Image(name=name, target=descriptor_pb2.Descriptor(
            media_type=media_type, digest=digest, size=size))
        try:
            self._call(f"create image {name}", self._images.Create,
                       images_pb2.CreateImageRequest(image=image))
        except AlreadyExists:
            self._call(f"update image {name}", self._images.Update,
                       images_pb2.UpdateImageRequest(image=image,
                                                     update_mask={"paths": ["target"]}))

    def image_target(self, name: str) -> str:
        """The digest an image record points at (NotFound if there is none)."""
        return self._call(f"image {name}", self._images.Get,
                          images_pb2.GetImageRequest(name=name)).image.target.digest

    # -- snapshots ---------------------------------------------------------------------------

    def stat_snapshot(self, snapshotter: str, key: str) -> snapshots_pb2.Info | None:
        try:
            return self._call(f"snapshot {key}", self._snapshots.Stat,
                              snapshots_pb2.StatSnapshotRequest(snapshotter=snapshotter,
                                                                key=key)).info
        except NotFound:
            return None

    def prepare_snapshot(self, snapshotter: str, key: str, parent: str,
                         labels: dict[str, str]) -> bool:
        """Prepare ``key``; True when the snapshotter already had it (ALREADY_EXISTS)."""
        try:
            self._call(f"prepare snapshot {key} in {snapshotter}", self._snapshots.Prepare,
                       snapshots_pb2.PrepareSnapshotRequest(snapshotter=snapshotter, key=key,
                                                            parent=parent, labels=labels))
            return False
        except AlreadyExists:
            return True

    def remove_snapshot(self, snapshotter: str, key: str) -> None:
        self._call(f"remove snapshot {key}", self._snapshots.Remove,
                   snapshots_pb2.RemoveSnapshotRequest(snapshotter=snapshotter, key=key))
