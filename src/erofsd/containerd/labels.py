"""The snapshot labels containerd and erofsd agree on (containerd 1.6, CRI plugin names).

containerd's unpacker passes each layer's annotations prefixed
``containerd.io/snapshot/`` to the snapshotter as labels, with
``containerd.io/snapshot.ref`` naming the layer's chain ID; the CRI plugin
adds the ``cri.*`` labels. ``erofsd containerd pull`` sends the same ones,
so the snapshotter serves both paths alike.
"""

SNAPSHOT_REF = "containerd.io/snapshot.ref"
INHERITED_PREFIX = "containerd.io/snapshot/"
IMAGE_REF = "containerd.io/snapshot/cri.image-ref"
MANIFEST_DIGEST = "containerd.io/snapshot/cri.manifest-digest"
LAYER_DIGEST = "containerd.io/snapshot/cri.layer-digest"
INDEX = "containerd.io/snapshot/erofsd.index"  # an ordinary image, mounted through this index
MAX_LABEL = 4096  # a label's key plus value, in bytes (containerd's limit)

# gRPC metadata keys of containerd's API
NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
