"""B10 compressed transfer: what an erofsd image costs a registry and a full read.

For the stdlib tree and the Debian minbase + python3 root filesystem of B8:
the tree as one tar layer, gzip -6 as docker and containerd write it, set
against the same layer converted by `erofsd convert`, with zstd blobs (the
default) and with uncompressed ones. Registry bytes are the layers (for
erofsd: the bootstrap and the blobs). Then every file of the zstd image is
read through a fresh cache (`erofsd extract docker://...`) from a
docker-registry on 127.0.0.1; the bytes the registry sent (its access log,
manifest and config included) are set against a full pull of the gzip
layer. Sizes, not timings: one run of each is exact.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

from .b8_container_start import debian_python_tree
from .common import DATA_DIR, MIB, Figure, erofsd_command, stdlib_tree, tests_on_path


def _tar(tree: Path) -> bytes:
    return subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "--sort=name",
                           "-cf", "-", "."], check=True, capture_output=True).stdout


def _layer_bytes(ref: str) -> int:
    from erofsd.images import open_image

    with open_image(ref) as opened:
        manifest = opened.manifest
        return manifest.bootstrap.size + sum(b.size for b in manifest.blobs)


def run(quick: bool) -> list[Figure]:
    tests_on_path()
    from erofsd.localregistry import Registry
    from erofsd.oci.convert import BlobSettings, convert
    from erofsd.oci.copy import push
    from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
    from erofsd.oci.transport import Transport
    from imagekit import write_image

    sets = [("stdlib", stdlib_tree(quick))]
    debian = debian_python_tree()
    if debian is not None:
        sets.append(("Debian minbase + python3", debian))
    figures = []
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-b9-", dir=DATA_DIR) as tmp:
        work = Path(tmp)
        registry = Registry(work / "registry", access_log=True)
        try:
            for i, (name, tree) in enumerate(sets):
                tar = _tar(tree)
                gzip_bytes = len(gzip.compress(tar, 6, mtime=0))
                source = write_image(work / f"src{i}", "t", [tar], compression="")
                zstd, plain = f"oci:{work / f'zstd{i}'}:t", f"oci:{work / f'plain{i}'}:t"
                convert(source, zstd, state_dir=work / "state")
                convert(source, plain, state_dir=work / "state",
                        settings=BlobSettings(compression=None))
                remote = registry.ref(f"bench/b9-{i}", "zstd")
                push(parse_layout_ref(zstd), parse_registry_ref(remote), Transport(insecure=True))
                mark = len(registry.requests())
                subprocess.run(erofsd_command("extract", remote, str(work / "out"), "--quiet",
                                              "--insecure", "--state-dir", str(work / f"c{i}")),
                               check=True)
                sent = sum(r.size for r in registry.requests()[mark:] if r.method == "GET")
                shutil.rmtree(work / "out")
                params = {"data": name, "tar_bytes": len(tar), "runs": 1}
                gz = gzip_bytes / MIB
                figures += [
                    Figure("B10", f"registry bytes, {name}, zstd blobs", "MiB",
                           _layer_bytes(zstd) / MIB, "the gzip -6 layer", gz, params,
                           higher_is_better=False, goal="erofsd <= gzip"),
                    Figure("B10", f"registry bytes, {name}, uncompressed blobs", "MiB",
                           _layer_bytes(plain) / MIB, "the gzip -6 layer", gz, params,
                           higher_is_better=False),
                    Figure("B10", f"full read: bytes from the registry, {name}", "MiB",
                           sent / MIB, "full pull of the gzip -6 layer", gz, params,
                           higher_is_better=False, goal="erofsd <= gzip"),
                ]
        finally:
            registry.stop()
    return figures
