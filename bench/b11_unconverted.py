"""B11 lazy start of an ordinary, unconverted image, through its index.

The image is ordinary: the stdlib tree as one gzip layer (GNU tar, then
gzip at Python's default level, 9), in a docker-registry on 127.0.0.1,
indexed by ``erofsd index`` (the default span, and SOCI's 4 MiB for
comparison) and converted by ``erofsd convert`` into its erofsd twin
beside it. The
workload is B3's: the files ``import json, email, http.client, sqlite3``
opens. Contenders, alternating, each from a cold cache and cold page
caches:

- erofsd, unconverted: a fresh daemon mounts the ordinary image with
  ``--index`` (fanotify) and the workload runs;
- the same with a 4 MiB-span index;
- erofsd, the converted twin: the same, without an index;
- a full pull with unpack: the gzip layer downloaded (erofsd's HTTP
  client), gunzipped and untarred by GNU tar, then the workload.

Bytes fetched are the cookies' counts less the span tables, which a mount
fetches before any read (reported on their own, with the bootstrap, as
the index's size per image size); the windows a read needs are counted
in, as they are fetched with the spans.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from erofsd.localregistry import Registry
from erofsd.oci.convert import convert
from erofsd.oci.copy import push
from erofsd.oci.indexartifact import index_reference
from erofsd.oci.indexer import DEFAULT_SPAN
from erofsd.oci.reference import parse_layout_ref, parse_registry_ref
from erofsd.oci.source import resolve_image
from erofsd.oci.transport import Transport

from .b3_lazy_start import run_workload, workload
from .common import MIB, Figure, Sample, alternate, drop_caches, median, tests_on_path


def run(quick: bool) -> list[Figure]:
    tests_on_path()
    from daemonutil import DaemonProc
    from imagekit import gnu_tar, write_image

    runs = 3 if quick else 5
    files, tree, read_bytes = workload(quick)
    with tempfile.TemporaryDirectory(prefix="erofsd-bench-b11-") as tmp:
        root = Path(tmp)
        registry = Registry(root / "registry")
        try:
            tar = gnu_tar(tree)
            local = write_image(root / "src", "std", [tar])
            ordinary = registry.ref("bench/stdlib", "ordinary")
            push(parse_layout_ref(local), parse_registry_ref(ordinary), Transport(insecure=True))
            indexes = {span: index_reference(ordinary, insecure=True, span_size=span)
                       for span in (DEFAULT_SPAN, 4 * MIB)}
            twin = registry.ref("bench/stdlib", "erofsd")
            convert(ordinary, twin, state_dir=root / "convert-state", insecure=True)
            layer = _layer(ordinary)
            fetched: dict[str, list[int]] = {"default": [], "4M": [], "twin": []}

            def lazy(name: str, image: str, index: str | None, tables: int) -> Sample:
                shutil.rmtree(root / "lazy", ignore_errors=True)
                with DaemonProc(root / "lazy") as daemon:
                    drop_caches()
                    started = time.perf_counter()
                    mnt = daemon.mountpoint("m")
                    daemon.client.mount(image, mnt, insecure=True,
                                        **({"index": index} if index else {}))
                    run_workload(mnt, files)
                    wall = time.perf_counter() - started
                    total = sum(c["fetched_bytes"] for c in daemon.client.status()["cookies"])
                    fetched[name].append(total - tables)
                    return Sample(wall, 0)

            def pull_and_unpack() -> Sample:
                out = root / "unpacked"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                drop_caches()
                started = time.perf_counter()
                image = resolve_image(ordinary, transport=Transport(insecure=True))
                gz = image.source.read_range(layer["digest"], 0, layer["size"])
                subprocess.run(["tar", "xzf", "-", "-C", str(out)], input=gz, check=True)
                run_workload(str(out), files)
                return Sample(time.perf_counter() - started, 0)

            twin_tables = _twin_tables(twin)
            one, four, converted, peer = alternate(
                runs,
                lambda: lazy("default", ordinary, indexes[DEFAULT_SPAN].index.digest,
                             indexes[DEFAULT_SPAN].table_bytes),
                lambda: lazy("4M", ordinary, indexes[4 * MIB].index.digest,
                             indexes[4 * MIB].table_bytes),
                lambda: lazy("twin", twin, None, twin_tables),
                pull_and_unpack)
        finally:
            registry.stop()
    data = {name: statistics.median(values) for name, values in fetched.items()}
    image_bytes = layer["size"]
    default, soci = indexes[DEFAULT_SPAN], indexes[4 * MIB]
    params = {"files": len(files), "bytes_read": read_bytes, "image_bytes": image_bytes,
              "tar_bytes": len(tar), "span_size": DEFAULT_SPAN,
              "index_bytes": default.total_bytes, "index_mount_bytes": default.mount_bytes,
              "index_bytes_4M": soci.total_bytes, "index_mount_bytes_4M": soci.mount_bytes,
              "runs": runs}
    return [
        Figure("B11", "cold start of the unconverted image, through its index", "s",
               median(one), "full pull + unpack", median(peer), params,
               higher_is_better=False, goal="<= 0.25 x the full pull"),
        Figure("B11", "cold start: unconverted (index) against the converted twin", "s",
               median(one), "erofsd, converted twin", median(converted), params,
               higher_is_better=False),
        Figure("B11", "cold start: default spans against SOCI's 4 MiB", "s", median(one),
               "4 MiB spans", median(four), params, higher_is_better=False),
        Figure("B11", "layer bytes fetched per byte read, unconverted", "x",
               data["default"] / read_bytes, "4 MiB spans", data["4M"] / read_bytes, params,
               higher_is_better=False, goal="<= 1.3"),
        Figure("B11", "blob bytes fetched per byte read: unconverted against the twin", "x",
               data["default"] / read_bytes, "erofsd, converted twin",
               data["twin"] / read_bytes, params, higher_is_better=False),
        Figure("B11", "index size per image size", "%",
               100 * default.total_bytes / image_bytes, "with 4 MiB spans",
               100 * soci.total_bytes / image_bytes, params, higher_is_better=False),
        Figure("B11", "index bytes a mount fetches before reading, per image size", "%",
               100 * default.mount_bytes / image_bytes, "with 4 MiB spans",
               100 * soci.mount_bytes / image_bytes, params, higher_is_better=False),
    ]


def _layer(reference: str) -> dict:
    import json
    image = resolve_image(reference, transport=Transport(insecure=True))
    return json.loads(image.manifest)["layers"][0]


def _twin_tables(reference: str) -> int:
    """The chunk table bytes a mount of the converted twin fetches before any data."""
    from erofsd.oci.image import ErofsdManifest
    image = resolve_image(reference, transport=Transport(insecure=True))
    manifest = ErofsdManifest.parse(image.manifest, image.digest)
    return sum(b.table_size for b in manifest.blobs)
