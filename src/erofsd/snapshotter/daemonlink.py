"""The snapshotter's side of the erofsd daemon: mount an image for a snapshot, and let go.

Like every client command it reaches the daemon on its socket and starts
one (on the configured state directory) when none answers.
"""

from __future__ import annotations

import logging
import os

from ..config import Config
from ..containerd.labels import INDEX, SNAPSHOT_REF
from ..daemon.client import DaemonClient, ensure_daemon
from ..errors import NotFound
from ..oci.reference import parse_registry_ref
from .store import Snapshot

log = logging.getLogger("erofsd.snapshotter")


def fsid_of(namespace: str, snapshot: Snapshot) -> str:
    """Unique in a domain: namespaces that pull one image mount it once each."""
    target = snapshot.labels.get(SNAPSHOT_REF, "")
    return f"{namespace}-{target.rpartition(':')[2][:16] or snapshot.id}"


class DaemonLink:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._client: DaemonClient | None = None

    def client(self) -> DaemonClient:
        ensure_daemon(self.config.socket, self.config.state_dir)
        if self._client is None:
            self._client = DaemonClient(self.config.socket)
        return self._client

    def mount(self, snapshot: Snapshot, namespace: str) -> None:
        placement = self.config.placement_of(namespace)
        host = parse_registry_ref(snapshot.image).host
        fields = {"fsid": fsid_of(namespace, snapshot), "domain_id": placement.domain,
                  "mode": placement.mode, "insecure": self.config.insecure(host),
                  "mirror": self.config.mirror, "prefetch": placement.prefetch,
                  "index": snapshot.labels.get(INDEX)}
        self.client().mount(snapshot.image, snapshot.mountpoint,
                            **{k: v for k, v in fields.items() if v is not None})

    def ensure_mounted(self, snapshot: Snapshot) -> str:
        """The image's mount point, mounted again if the daemon lost it (a reboot, say)."""
        if not os.path.ismount(snapshot.mountpoint):
            log.warning("%s is not mounted any more: mounting %s again", snapshot.mountpoint,
                        snapshot.image)
            os.makedirs(snapshot.mountpoint, exist_ok=True)
            self.mount(snapshot, snapshot.key.partition("/")[0])
        return snapshot.mountpoint

    def release(self, snapshot: Snapshot) -> None:
        """Unmount it through the daemon, which drops its cookies; gone already is fine."""
        try:
            self.client().umount(snapshot.mountpoint)
        except NotFound:
            pass
