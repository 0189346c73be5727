"""The options every read command shares: the cache, domains, readahead, the state dir."""

from __future__ import annotations

import os
import subprocess
import sys

from erofsd.cache.store import BlobCache


def test_cli_readahead_and_domain_volumes(image, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "erofsd", *map(str, args)],
                              capture_output=True)
    layout = image["layout"].root
    assert run("cat", f"oci:{layout}", "/f03", "--state-dir", tmp_path, "--domain-id", "d1",
               "--readahead", "0").stdout == (image["src"] / "f03").read_bytes()
    listing = BlobCache(tmp_path).list()
    assert [v.volume for v in listing] == ["erofs,d1"]
    assert listing[0].blobs[0].cached_bytes == 65536
    bad = run("ls", f"oci:{layout}", "--state-dir", tmp_path, "--domain-id", "a,b")
    assert bad.returncode == 1 and b"must not contain" in bad.stderr


def test_state_dir_from_the_environment_does_not_reroute_layout_reads(image, tmp_path):
    """$EROFSD_STATE_DIR says where the cache is; it does not make local reads use it."""
    env = {**os.environ, "EROFSD_STATE_DIR": str(tmp_path / "st")}
    result = subprocess.run([sys.executable, "-m", "erofsd", "ls", f"oci:{image['layout'].root}"],
                            capture_output=True, env=env)
    assert result.returncode == 0 and b"f00" in result.stdout
    cache_dir = tmp_path / "st" / "cache"
    assert not cache_dir.exists() or not any(cache_dir.iterdir())
