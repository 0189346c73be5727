"""Media types and annotation keys erofsd reads and writes."""

OCI_LAYOUT_VERSION = "1.0.0"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)

# An erofsd image's layers carry layer media types, so that containerd hands them
# to a snapshotter (it fetches anything else eagerly, then cannot unpack it), and
# an annotation containerd passes to the snapshotter as a label.
EROFSD_BOOTSTRAP = "application/vnd.oci.image.layer.erofsd.bootstrap.v1"
EROFSD_BLOB = "application/vnd.oci.image.layer.erofsd.blob.v1"
SNAPSHOT_LAYER = "containerd.io/snapshot/erofsd.layer"  # "bootstrap" or "blob"
# what releases before containerd support wrote (bootstrap first): still read
LEGACY_BOOTSTRAP = "application/vnd.erofsd.bootstrap.v1"
LEGACY_BLOB = "application/vnd.erofsd.blob.v1"
BOOTSTRAP_TYPES = (EROFSD_BOOTSTRAP, LEGACY_BOOTSTRAP)
BLOB_TYPES = (EROFSD_BLOB, LEGACY_BLOB)

REF_NAME = "org.opencontainers.image.ref.name"
BLOB_DATA_SIZE = "io.erofsd.blob.data-size"
BLOB_CHUNK_TABLE = "io.erofsd.blob.chunk-table"
BLOB_TABLE_OFFSET = "io.erofsd.blob.chunk-table-offset"  # compressed blobs only
EROFSD_IMAGE_ANNOTATION = "io.erofsd.image"  # on an index entry: this is the erofsd image

# The index of an ordinary image (erofsd index): an artifact whose subject is the image
INDEX_ARTIFACT = "application/vnd.erofsd.tar-index.v1"
INDEX_BOOTSTRAP = "application/vnd.erofsd.tar-index.bootstrap.v1"
INDEX_SPANS = "application/vnd.erofsd.tar-index.spans.v1"
INDEX_WINDOWS = "application/vnd.erofsd.tar-index.windows.v1"
EMPTY = "application/vnd.oci.empty.v1+json"
SPAN_SIZE = "io.erofsd.index.span-size"
LAYER = "io.erofsd.index.layer"  # on a span table and its windows: the layer they cut
DIFF_ID = "io.erofsd.index.diff-id"
TAR_SIZE = "io.erofsd.index.tar-size"
