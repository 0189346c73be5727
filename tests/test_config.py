"""The TOML config of the daemon and the snapshotter (config.py)."""

from __future__ import annotations

import pytest

from erofsd.config import Config, Placement, load, parse
from erofsd.errors import InvalidArgument, InvalidName, NotFound


def test_a_full_config_reads_back(tmp_path):
    path = tmp_path / "erofsd.toml"
    path.write_text('''
state_dir = "/srv/erofsd"
socket = "/run/x.sock"
[cache]
max_size = "20G"
[registry]
insecure = ["127.0.0.1:5000"]
mirror = "http://mirror:5000"
auth_file = "/etc/erofsd/auth.json"
[snapshotter]
root = "/srv/snap"
address = "/run/snap.sock"
domain = "tenant-a"
mode = "fuse"
[snapshotter.namespaces."k8s.io"]
domain = "k8s"
prefetch = true
[snapshotter.namespaces.private]
domain = ""
''')
    config = load(str(path))
    assert (config.state_dir, config.socket, config.cache_max_size) == \
        ("/srv/erofsd", "/run/x.sock", 20 << 30)
    assert config.insecure("127.0.0.1:5000") and not config.insecure("registry.example")
    assert config.placement_of("default") == Placement("tenant-a", "fuse")
    assert config.placement_of("k8s.io") == Placement("k8s", "fuse", True)  # mode inherited
    assert config.placement_of("private") == Placement(None, "fuse")  # no domain: private


def test_no_file_means_the_defaults():
    assert load(None) == Config() and Config().placement_of("any").domain == "node"
    assert not Config().discover_indexes
    assert parse({"snapshotter": {"index": "discover"}}).discover_indexes


@pytest.mark.parametrize("text, error, message", [
    ("colour = 1", InvalidArgument, "unknown key"),
    ("[snapshotter]\ndomian = 'x'", InvalidArgument, "snapshotter.domian"),
    ("state_dir = 5", InvalidArgument, "state_dir must be a str, not int"),
    ("[registry]\ninsecure = 'host'", InvalidArgument, "registry.insecure must be a list"),
    ("[snapshotter]\nmode = 'magic'", InvalidArgument, "mode is 'magic'"),
    ("[snapshotter]\nprefetch = 'yes'", InvalidArgument, "prefetch must be a bool, not str"),
    ("[snapshotter]\nindex = 'always'", InvalidArgument, "index is 'always'"),
    ("[cache]\nmax_size = true", InvalidArgument, "max_size must be a str or int, not bool"),
    ("[snapshotter]\ndomain = 'a,b'", InvalidName, "must not contain"),
    ("[cache]\nmax_size = 'lots'", InvalidArgument, "not a size"),
    ("state_dir = ", InvalidArgument, "config file"),
])
def test_mistakes_are_named(tmp_path, text, error, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(error, match=message):
        load(str(path))


def test_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        load(str(tmp_path / "nowhere.toml"))


def test_parse_takes_tables():
    assert parse({"cache": {"max_size": 1024}}).cache_max_size == 1024
