"""Sources against a real docker-registry on 127.0.0.1: push, pull, skopeo, auth, mirrors."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from erofsd.cache.store import BlobCache
from erofsd.errors import AuthError, NotFound
from erofsd.images import ReadOptions, open_image
from erofsd.localregistry import Registry
from erofsd.oci.copy import pull, push
from erofsd.oci.descriptor import Descriptor, canonical_json
from erofsd.oci.layout import OciLayout
from erofsd.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
from erofsd.oci.source import resolve_image
from erofsd.oci.transport import Transport
from skips import requires_tool
from treeutil import assert_same_tree, snapshot_image


def erofsd(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "erofsd", *map(str, args)],
                          capture_output=True, timeout=300, env=env)


def local_snapshot(layout, tag):
    with open_image(f"oci:{layout}:{tag}") as opened:
        return snapshot_image(opened.image)


def test_push_then_pull_round_trip(registry, family, tmp_path):
    layout = family["layout"]
    t = Transport(insecure=True)
    report = push(parse_layout_ref(f"oci:{layout}:a"),
                  parse_registry_ref(registry.ref("rt/a", "v1")), t)
    assert report.copied == 4  # config, bootstrap, two blobs
    again = push(parse_layout_ref(f"oci:{layout}:a"),
                 parse_registry_ref(registry.ref("rt/a", "v1")), t)
    assert (again.copied, again.skipped) == (0, 4)
    pulled = pull(parse_registry_ref(registry.ref("rt/a", "v1")),
                  parse_layout_ref(f"oci:{tmp_path / 'pulled'}:x"), t)
    assert pulled.manifest == report.manifest
    assert_same_tree(local_snapshot(tmp_path / "pulled", "x"), local_snapshot(layout, "a"))


def test_cli_push_pull(registry, family, tmp_path):
    result = erofsd("push", f"oci:{family['layout']}:b", registry.ref("cli/b", "t"),
                    "--insecure")
    assert result.returncode == 0, result.stderr
    assert b"pushed" in result.stdout
    result = erofsd("pull", registry.ref("cli/b", "t"), f"oci:{tmp_path / 'p'}:t", "--insecure")
    assert result.returncode == 0, result.stderr
    assert erofsd("check", f"oci:{tmp_path / 'p'}:t").returncode == 0
    wrong = erofsd("push", registry.ref("cli/b", "t"), f"oci:{tmp_path}/x", "--insecure")
    assert wrong.returncode == 1 and b"should be oci:DIR" in wrong.stderr


@requires_tool("skopeo")
def test_skopeo_moves_erofsd_images_unchanged(registry, family, tmp_path):
    layout = family["layout"]
    digest = OciLayout.open(layout).resolve("a").digest
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:a",
                    f"docker://{registry.host}/skopeo/a:v1"], check=True, capture_output=True)
    image = resolve_image(registry.ref("skopeo/a", "v1"), transport=Transport(insecure=True))
    assert image.digest == digest
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false",
                    f"docker://{registry.host}/skopeo/a:v1", f"oci:{tmp_path / 'back'}:a"],
                   check=True, capture_output=True)
    assert OciLayout.open(tmp_path / "back").resolve("a").digest == digest
    assert erofsd("check", f"oci:{tmp_path / 'back'}:a").returncode == 0


def test_remote_reads_fetch_only_what_is_read(registry, family, tmp_path):
    push(parse_layout_ref(f"oci:{family['layout']}:a"),
         parse_registry_ref(registry.ref("lazy/a")), Transport(insecure=True))
    options = ReadOptions(state_dir=str(tmp_path / "state"), insecure=True, readahead=0)
    with open_image(registry.ref("lazy/a"), options=options) as opened:
        img = opened.image
        small = next(i for _, i in img.walk() if i.is_reg and 0 < i.size < 3000
                     and not img.map(i, 0).is_hole)
        data = img.read(small, 0, small.size)
        assert len(data) == small.size
        extent = img.map(small, 0)
        base = opened.blobs[extent.device - 1]
        chunk = base.table.covering(extent.physical, extent.physical + 1).start
        frame = base.table.frames[base.table.frame_of(chunk)]
        assert base.table.compressed and frame.stored_length < frame.length
        # exactly the chunk table and the one frame the file's chunk travels in
        assert base.stats.fetched_bytes == base.ref.table_size + frame.stored_length
    assert_same_tree(_remote_snapshot(registry.ref("lazy/a"), tmp_path / "state2"),
                     local_snapshot(family["layout"], "a"))


def _remote_snapshot(ref, state):
    with open_image(ref, options=ReadOptions(state_dir=str(state), insecure=True)) as opened:
        return snapshot_image(opened.image)


def test_missing_image_and_tag_are_clear(registry):
    with pytest.raises(NotFound, match="no such manifest"):
        resolve_image(registry.ref("nobody/here"), transport=Transport(insecure=True))
    result = erofsd("ls", registry.ref("nobody/here"), "--insecure", "--state-dir", "/tmp/x-st")
    assert result.returncode == 1 and b"no such manifest" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("auth-registry"), htpasswd=("alice", "s3cret-pw"))
    yield reg
    reg.stop()


def _auth_file(path, host, user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


def test_basic_auth_from_auth_file(auth_registry, family, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no stray ~/.docker/config.json
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    src = parse_layout_ref(f"oci:{family['layout']}:a")
    dst = parse_registry_ref(auth_registry.ref("private/a"))
    with pytest.raises(AuthError, match="no credentials"):
        push(src, dst, Transport(insecure=True))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(_auth_file(
        tmp_path / "bad.json", auth_registry.host, "alice", "wrong")))
    with pytest.raises(AuthError, match="refused"):
        push(src, dst, Transport(insecure=True))
    good = _auth_file(tmp_path / "auth.json", auth_registry.host, "alice", "s3cret-pw")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(good))
    push(src, dst, Transport(insecure=True))
    env = {"REGISTRY_AUTH_FILE": str(good), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = erofsd("-vv", "cat", auth_registry.ref("private/a"), "/", "--insecure",
                    "--state-dir", tmp_path / "st", env=env)
    assert b"s3cret-pw" not in result.stderr + result.stdout
    assert base64.b64encode(b"alice:s3cret-pw") not in result.stderr + result.stdout
    assert b"not a regular file" in result.stderr  # it got in: "/" is a directory
    assert_same_tree(_remote_snapshot(auth_registry.ref("private/a"), tmp_path / "st2"),
                     local_snapshot(family["layout"], "a"))


@pytest.fixture
def static_mirror(family):
    """Python's http.server over the layout: a mirror that ignores Range (always 200)."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(family["layout"]))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_static_mirror_serving_whole_blobs(registry, family, static_mirror, tmp_path):
    push(parse_layout_ref(f"oci:{family['layout']}:b"),
         parse_registry_ref(registry.ref("mirrored/b")), Transport(insecure=True))
    options = ReadOptions(state_dir=str(tmp_path / "st"), insecure=True, mirror=static_mirror)
    with open_image(registry.ref("mirrored/b"), options=options) as opened:
        assert_same_tree(snapshot_image(opened.image), local_snapshot(family["layout"], "b"))
    dead = ReadOptions(state_dir=str(tmp_path / "st2"), insecure=True,
                       mirror="http://127.0.0.1:9")  # nothing listens: falls back
    with open_image(registry.ref("mirrored/b"), options=dead) as opened:
        assert_same_tree(snapshot_image(opened.image), local_snapshot(family["layout"], "b"))


def test_index_resolves_to_the_erofsd_manifest_or_platform(family, tmp_path):
    layout = OciLayout.open(family["layout"])
    a, b = layout.resolve("a"), layout.resolve("b")
    entries = [Descriptor(OCI_MANIFEST, a.digest, a.size,
                          platform={"os": "linux", "architecture": "arm64"}),
               Descriptor(OCI_MANIFEST, b.digest, b.size,
                          platform={"os": "linux", "architecture": "amd64"})]
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [e.to_json() for e in entries]})
    digest = layout.put_bytes(index)
    layout.set_tag("multi", Descriptor(OCI_INDEX, digest, len(index)))
    assert resolve_image(f"oci:{family['layout']}:multi", platform="linux/arm64").digest == a.digest
    assert resolve_image(f"oci:{family['layout']}:multi", platform="linux/amd64").digest == b.digest
    with pytest.raises(NotFound, match="linux/s390x"):
        resolve_image(f"oci:{family['layout']}:multi", platform="linux/s390x")
    marked = Descriptor(OCI_MANIFEST, a.digest, a.size, {"io.erofsd.image": "true"},
                        {"os": "linux", "architecture": "riscv64"})
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [entries[1].to_json(), marked.to_json()]})
    layout.set_tag("marked", Descriptor(OCI_INDEX, layout.put_bytes(index), len(index)))
    assert resolve_image(f"oci:{family['layout']}:marked").digest == a.digest


def test_cache_ls_json_shape(registry, family, tmp_path):
    push(parse_layout_ref(f"oci:{family['layout']}:a"),
         parse_registry_ref(registry.ref("ls/a")), Transport(insecure=True))
    state = tmp_path / "st"
    assert erofsd("cat", registry.ref("ls/a"), "/", "--insecure", "--state-dir", state,
                  "--domain-id", "d1").returncode == 1  # "/" is a directory: still opened
    listing = json.loads(erofsd("cache", "ls", "--json", "--state-dir", state).stdout)
    (volume,) = listing["volumes"]
    assert volume["volume"] == "erofs,d1"
    assert {b["blob"] for b in volume["blobs"]} == {
        b.digest for b in open_image(f"oci:{family['layout']}:a").manifest.blobs}
    for blob in volume["blobs"]:
        assert {"blob", "size", "cached_bytes", "fetched_bytes"} <= set(blob)
        assert blob["fetched_bytes"] > 0 and blob["cached_bytes"] <= blob["size"]
    BlobCache(state)  # the state dir stays usable


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    from tokenauth import TokenService
    root = tmp_path_factory.mktemp("token-registry")
    service = TokenService(root, {"bob": "t0ken-pw"})
    reg = Registry(root / "registry", auth_config=service.registry_auth_config())
    yield reg, service
    reg.stop()
    service.stop()


def test_bearer_token_flow(token_registry, family, tmp_path, monkeypatch):
    reg, service = token_registry
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(_auth_file(
        tmp_path / "auth.json", reg.host, "bob", "t0ken-pw")))
    push(parse_layout_ref(f"oci:{family['layout']}:a"), parse_registry_ref(reg.ref("tok/a")),
         Transport(insecure=True))
    # the registry's challenge names the actions in no fixed order (a Go map)
    assert {"repository:tok/a:pull,push", "repository:tok/a:push,pull"} & set(service.issued)
    assert_same_tree(_remote_snapshot(reg.ref("tok/a"), tmp_path / "st"),
                     local_snapshot(family["layout"], "a"))
    assert "repository:tok/a:pull" in service.issued
    # anonymous users get pull-only tokens: pushing is refused, cleanly
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    with pytest.raises(AuthError):
        push(parse_layout_ref(f"oci:{family['layout']}:b"),
             parse_registry_ref(reg.ref("tok/b")), Transport(insecure=True))


def test_redirects_to_a_storage_backend_are_followed(registry, family, tmp_path):
    """Blob requests answered with 307 to another host (as S3-backed registries do)."""
    from http.server import BaseHTTPRequestHandler

    redirected = []

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            redirected.append(self.path)
            self.send_response(307)
            self.send_header("Location", f"http://{registry.host}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        push(parse_layout_ref(f"oci:{family['layout']}:a"),
             parse_registry_ref(registry.ref("redir/a")), Transport(insecure=True))
        front = f"docker://127.0.0.1:{server.server_address[1]}/redir/a:latest"
        assert_same_tree(_remote_snapshot(front, tmp_path / "st"),
                         local_snapshot(family["layout"], "a"))
        assert any("/blobs/sha256:" in p for p in redirected)
    finally:
        server.shutdown()
        server.server_close()
