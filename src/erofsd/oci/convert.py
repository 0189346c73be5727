"""Convert an ordinary OCI or Docker image into an erofsd image, one blob per layer.

Each tar layer is streamed once: decompressed, checked against its digests,
read into a layer tree while its file data goes into a new blob. The blob
depends only on the layer's bytes, so a layer shared by two images becomes
the same blob in both, and so shares cache in a domain. The layer trees are
merged (whiteouts applied) into one bootstrap.

Conversions are remembered in the state directory (layer digest -> blob and
layer tree): a layer whose blob the destination already has is not read
again. Nothing is written to the destination until every layer converted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..erofs import treecodec
from ..erofs.blobwriter import BlobInfo, BlobWriter
from ..erofs.builder import DEFAULT_CHUNK_SIZE, BuildResult, assemble, check_chunk_size
from ..erofs.codec import Compression
from ..erofs.tarlayer import TarLayerReader
from ..erofs.tree import Node, merge_layer
from .copy import push
from .descriptor import Descriptor, sha256_digest
from .image import config_bytes, write_result
from .layerstream import LayerStream, read_checked
from .layout import OciLayout
from .manifest import parse_object
from .mediatypes import OCI_INDEX, OCI_MANIFEST
from .ordinary import read_ordinary
from .reference import LayoutRef, RegistryRef, parse_reference
from .registry import RegistryClient
from .source import BlobSource, resolve_image
from .transport import Transport
from .twin import check_beside, fetch_top, twin_index

SOURCE_LAYER = "io.erofsd.source-layer"
Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class BlobSettings:
    """What decides a converted layer's blob, besides the layer."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    compression: Compression | None = Compression()
    rootless: bool = False

    @property
    def key(self) -> str:
        """Their part of a conversion cache file name ("v2": records that know compression)."""
        coding = self.compression.name if self.compression else "raw"
        return f"{self.chunk_size}-{coding}{'-rootless' if self.rootless else ''}-v2"


@dataclasses.dataclass
class ConvertReport:
    manifest: Descriptor
    layers: int
    converted: int
    reused: int
    bytes_read: int
    file_bytes: int
    twin_index: Descriptor | None = None  # with --twin: what DST names now


class ConversionCache:
    """layer digest -> (blob, layer tree), one JSON file each, under <state>/convert/."""

    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.dir = Path(state_dir) / "convert"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, layer: str, settings: BlobSettings) -> Path:
        return self.dir / f"{layer.split(':', 1)[1]}-{settings.key}.json"

    def get(self, layer: str, settings: BlobSettings) -> dict | None:
        try:
            return json.loads(self._path(layer, settings).read_text())
        except (OSError, ValueError):
            return None

    def put(self, layer: str, settings: BlobSettings, blob: BlobInfo, tree: list) -> None:
        path = self._path(layer, settings)
        record = {"layer": layer, "blob": {k: v for k, v in dataclasses.asdict(blob).items()
                                           if k != "path"}, "tree": tree}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)


class _LayoutDestination:
    def __init__(self, ref: LayoutRef) -> None:
        self.ref = ref
        self.created = not os.path.exists(ref.path)
        self.layout = OciLayout.create(ref.path)
        self.workdir = tempfile.mkdtemp(prefix=".erofsd-convert-", dir=self.layout.temp_dir())

    def has_blob(self, digest: str) -> bool:
        return self.layout.has_blob(digest)

    def finish(self, result: BuildResult, annotations: list[dict], config: bytes, *,
               tagged: bool = True) -> Descriptor:
        """The image written under DST's tag (a twin index replaces it at once: a layout
        has no reader to see it in between)."""
        return write_result(self.layout, self.ref.tag, result, blob_annotations=annotations,
                            config=config)

    def put_index(self, raw: bytes) -> Descriptor:
        descriptor = Descriptor(OCI_INDEX, self.layout.put_bytes(raw), len(raw))
        self.layout.set_tag(self.ref.tag, descriptor)
        return descriptor

    def close(self, failed: bool) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        if failed and self.created:
            shutil.rmtree(self.ref.path, ignore_errors=True)


class _RegistryDestination:
    """Written to a temporary layout, then pushed; blobs the registry has are not sent."""

    def __init__(self, ref: RegistryRef, transport: Transport) -> None:
        self.ref, self.transport = ref, transport
        self.client = RegistryClient(ref.host, transport)
        self.workdir = tempfile.mkdtemp(prefix="erofsd-convert-")
        self.layout = OciLayout.create(os.path.join(self.workdir, "layout"))

    def has_blob(self, digest: str) -> bool:
        return self.client.blob_size(self.ref.repository, digest) is not None

    def finish(self, result: BuildResult, annotations: list[dict], config: bytes, *,
               tagged: bool = True) -> Descriptor:
        """The image pushed, under DST's tag, or by digest only when a twin index takes it
        (so the tag never names the erofsd image alone, even for a moment)."""
        descriptor = write_result(self.layout, "converted", result, blob_annotations=annotations,
                                  config=config)
        target = self.ref if tagged else self.ref.with_reference(digest=descriptor.digest)
        push(LayoutRef(str(self.layout.root), "converted"), target, self.transport)
        return descriptor

    def put_index(self, raw: bytes) -> Descriptor:
        return Descriptor(OCI_INDEX, self.client.put_manifest(self.ref, raw, OCI_INDEX), len(raw))

    def close(self, failed: bool) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def convert(src: str, dst: str, *, state_dir: str | os.PathLike, platform: str | None = None,
            settings: BlobSettings = BlobSettings(), insecure: bool = False,
            twin: bool = False, progress: Progress | None = None,
            on_total: Callable[[int], None] | None = None) -> ConvertReport:
    """Convert ``src`` into ``dst``; with ``twin``, ``dst`` then names an index of both."""
    check_chunk_size(settings.chunk_size)
    if twin:
        check_beside(src, dst)
    transport = Transport(insecure=insecure)
    try:
        image = resolve_image(src, transport=transport, platform=platform)
        top = fetch_top(src, transport) if twin else None  # before DST (maybe SRC) changes
        ordinary = read_ordinary(image, src)
        config, layers, diff_ids = ordinary.config, list(ordinary.layers), list(ordinary.diff_ids)
        if on_total:
            on_total(sum(d.size for d in layers))
        ref = parse_reference(dst)
        destination = (_LayoutDestination(ref) if isinstance(ref, LayoutRef)
                       else _RegistryDestination(ref, transport))
        failed = True
        try:
            report = _convert_layers(image.source, layers, diff_ids, destination,
                                     ConversionCache(state_dir), settings, progress)
            runtime = config.get("config")
            history = list(config.get("history") or []) + [
                {"created_by": f"erofsd convert {src}", "comment": "erofsd image",
                 "empty_layer": True}]
            bootstrap = sha256_digest(report.result.bootstrap)
            config_raw = config_bytes(report.result, bootstrap, runtime=runtime, history=history,
                                      architecture=config.get("architecture"),
                                      os_name=config.get("os", "linux"))
            annotations = [{SOURCE_LAYER: layer.digest} for layer in layers]
            descriptor = destination.finish(report.result, annotations, config_raw,
                                            tagged=not twin)
            index = None
            if top is not None:
                source = Descriptor(parse_object(image.manifest, "manifest").get("mediaType")
                                    or OCI_MANIFEST, image.digest, len(image.manifest))
                platform = {"os": config.get("os", "linux"),
                            "architecture": config.get("architecture", "amd64")}
                if config.get("variant"):
                    platform["variant"] = config["variant"]
                index = destination.put_index(twin_index(*top, source, descriptor, platform))
            failed = False
        finally:
            destination.close(failed)
        return ConvertReport(descriptor, len(layers), report.converted, report.reused,
                             report.bytes_read, report.result.file_bytes, index)
    finally:
        transport.close()


@dataclasses.dataclass
class _Layers:
    result: BuildResult
    converted: int
    reused: int
    bytes_read: int


def _convert_layers(source: BlobSource, layers: list[Descriptor], diff_ids: list[str],
                    destination, cache: ConversionCache, settings: BlobSettings,
                    progress: Progress | None) -> _Layers:
    merged: Node | None = None
    infos: list[BlobInfo] = []
    converted = reused = bytes_read = 0
    for index, layer in enumerate(layers):
        name = f"{index + 1}/{len(layers)} ({layer.digest})"
        cached = cache.get(layer.digest, settings)
        if cached and destination.has_blob(cached["blob"]["digest"]):
            tree = treecodec.decode(cached["tree"], index + 1, merged, name)
            info = BlobInfo(**cached["blob"], path="")
            reused += 1
            if progress:
                progress(layer.size)
        else:
            diff_id = diff_ids[index] if diff_ids else None
            tree, info, entries = _convert_layer(source, layer, diff_id, name, index + 1,
                                                 merged, destination.workdir, settings,
                                                 progress)
            cache.put(layer.digest, settings, info, entries)
            converted += 1
            bytes_read += layer.size
        merged = merge_layer(merged, tree)
        infos.append(info)
    return _Layers(assemble([merged], infos, settings.chunk_size), converted, reused,
                   bytes_read)


def _convert_layer(source: BlobSource, layer: Descriptor, diff_id: str | None, name: str,
                   device: int, lower: Node | None, workdir: str, settings: BlobSettings,
                   progress: Progress | None) -> tuple[Node, BlobInfo, list]:
    stream = LayerStream(source, layer, diff_id, progress=progress)
    fd, path = tempfile.mkstemp(prefix=".blob-", suffix=".tmp", dir=workdir)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            writer = BlobWriter(out, settings.chunk_size, compression=settings.compression)
            reader = TarLayerReader(name, device, writer, lower, rootless=settings.rootless)
            tree = read_checked(stream, name, reader.read)
            info = writer.finish(path)
        return tree, info, treecodec.encode(tree, reader.own, reader.lower_links)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
