"""One TOML file for the daemon and the snapshotter (``--config FILE``).

    state_dir = "/var/lib/erofsd"            # the daemon's cache and state
    socket = "/run/erofsd/erofsd.sock"       # the daemon's control socket

    [cache]
    max_size = "20G"          # the daemon evicts unreferenced blobs, oldest first, past this

    [registry]
    insecure = ["127.0.0.1:5000"]            # hosts reached over plain HTTP
    mirror = "http://mirror.example:5000"    # a static blob mirror, tried first
    auth_file = "/etc/erofsd/auth.json"      # credentials (as $REGISTRY_AUTH_FILE)

    [snapshotter]
    root = "/var/lib/erofsd-snapshotter"
    address = "/run/erofsd/snapshotter.sock" # what containerd's proxy_plugins names
    domain = "node"                          # every layer on the node shares one domain
    mode = "auto"                            # the daemon's data path for its mounts
    prefetch = false                         # fetch each image whole in the background
    index = "off"                            # "discover": Kubernetes' ordinary images run
                                             # lazily through the index their repository
                                             # lists (trusting whoever can push there)

    [snapshotter.namespaces."k8s.io"]        # a containerd namespace of its own
    domain = "k8s"

Every key is optional; an unknown key or a value of the wrong type is an
error naming it, not a silent default. Command line options win over the
file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from typing import Any

from .daemon.protocol import DEFAULT_SOCKET, MODES
from .domain import validate_name
from .errors import InvalidArgument, NotFound
from .oci.referrers import DISCOVER
from .sizes import parse_size

DEFAULT_STATE_DIR = "/var/lib/erofsd"
DEFAULT_SNAPSHOTTER_ROOT = "/var/lib/erofsd-snapshotter"
DEFAULT_SNAPSHOTTER_ADDRESS = "/run/erofsd/snapshotter.sock"
DEFAULT_DOMAIN = "node"


@dataclasses.dataclass(frozen=True)
class Placement:
    """How the snapshotter mounts a namespace's images: a domain (None: private), a mode,
    and whether each image is fetched whole in the background once mounted."""

    domain: str | None = DEFAULT_DOMAIN
    mode: str = "auto"
    prefetch: bool = False


@dataclasses.dataclass(frozen=True)
class Config:
    state_dir: str = DEFAULT_STATE_DIR
    socket: str = DEFAULT_SOCKET
    cache_max_size: int | None = None
    insecure_registries: tuple[str, ...] = ()
    mirror: str | None = None
    auth_file: str | None = None
    snapshotter_root: str = DEFAULT_SNAPSHOTTER_ROOT
    snapshotter_address: str = DEFAULT_SNAPSHOTTER_ADDRESS
    placement: Placement = Placement()
    namespaces: dict[str, Placement] = dataclasses.field(default_factory=dict)
    discover_indexes: bool = False  # [snapshotter] index = "discover"

    def placement_of(self, namespace: str) -> Placement:
        return self.namespaces.get(namespace, self.placement)

    def insecure(self, host: str) -> bool:
        return host in self.insecure_registries


def load(path: str | None) -> Config:
    """The configuration in ``path``; the defaults when no file is named."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise NotFound(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"config file {path}: {e}") from None
    return parse(raw, path)


class _Table:
    """One table of the file, read key by key; what is left unread is an error."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{where} must be a table")
        self.raw, self.where, self.read = raw, where, set()

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.read.add(key)
        if key not in self.raw:
            return default
        value = self.raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise InvalidArgument(f"{self.where}{key} must be a "
                                  f"{' or '.join(k.__name__ for k in kinds)}, not "
                                  f"{type(value).__name__}")
        return value

    def table(self, key: str) -> _Table:
        return _Table(self.get(key, dict, {}), f"{self.where}{key}.")

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.read)
        if unknown:
            raise InvalidArgument(f"unknown key(s) in the config: "
                                  f"{', '.join(self.where + k for k in unknown)}")


def _placement(table: _Table, default: Placement) -> Placement:
    domain = table.get("domain", str, default.domain)
    if domain is not None and domain != "":
        validate_name(domain, f"{table.where}domain")
    mode = table.get("mode", str, default.mode)
    if mode not in MODES:
        raise InvalidArgument(f"{table.where}mode is {mode!r}: one of {', '.join(MODES)}")
    return Placement(domain or None, mode, table.get("prefetch", bool, default.prefetch))


def _index_choice(table: _Table) -> bool:
    choice = table.get("index", str, "off")
    if choice not in ("off", DISCOVER):
        raise InvalidArgument(f"{table.where}index is {choice!r}: 'off' or '{DISCOVER}'")
    return choice == DISCOVER


def parse(raw: dict, path: str = "config") -> Config:
    top = _Table(raw, "")
    cache, registry, snapshotter = top.table("cache"), top.table("registry"), \
        top.table("snapshotter")
    max_size = cache.get("max_size", (str, int))
    insecure = registry.get("insecure", list, [])
    if not all(isinstance(h, str) for h in insecure):
        raise InvalidArgument("registry.insecure must be a list of host[:port] strings")
    placement = _placement(snapshotter, Placement())
    spaces = snapshotter.table("namespaces")
    namespaces = {}
    for name in list(spaces.raw):
        space = spaces.table(name)
        namespaces[name] = _placement(space, placement)
        space.done()
    config = Config(
        state_dir=top.get("state_dir", str, DEFAULT_STATE_DIR),
        socket=top.get("socket", str, DEFAULT_SOCKET),
        cache_max_size=parse_size(str(max_size)) if max_size is not None else None,
        insecure_registries=tuple(insecure),
        mirror=registry.get("mirror", str),
        auth_file=registry.get("auth_file", str),
        snapshotter_root=snapshotter.get("root", str, DEFAULT_SNAPSHOTTER_ROOT),
        snapshotter_address=snapshotter.get("address", str, DEFAULT_SNAPSHOTTER_ADDRESS),
        placement=placement, namespaces=namespaces,
        discover_indexes=_index_choice(snapshotter))
    for table in (cache, registry, spaces, snapshotter, top):
        table.done()
    return config
