"""Ordinary (non-erofsd) OCI and Docker images, made from tar bytes, for conversion tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import zstandard

from erofsd.oci.descriptor import Descriptor, canonical_json
from erofsd.oci.layout import OciLayout
from erofsd.oci.mediatypes import DOCKER_CONFIG, DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def compress(tar: bytes, how: str) -> tuple[bytes, str]:
    """(blob, OCI media type) for "", "gzip" or "zstd"."""
    if how == "gzip":
        return gzip.compress(tar, mtime=0), OCI_LAYER + "+gzip"
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(tar), OCI_LAYER + "+zstd"
    return tar, OCI_LAYER


def write_image(root: Path, tag: str, layers: list[bytes], *, compression: str = "gzip",
                docker: bool = False, config: dict | None = None,
                tamper_layer: int | None = None, bad_diff_id: bool = False) -> str:
    """An image in an OCI layout; returns its oci: reference."""
    layout = OciLayout.create(root)
    descriptors, diff_ids = [], []
    for index, tar in enumerate(layers):
        blob, media_type = compress(tar, compression)
        if docker:
            media_type = DOCKER_LAYER_GZIP if compression == "gzip" else media_type
        digest = layout.put_bytes(blob)
        if index == tamper_layer:  # the stored bytes no longer match their digest
            path = layout.blob_path(digest)
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
        descriptors.append(Descriptor(media_type, digest, len(blob)))
        claimed = tar + (b"x" if bad_diff_id else b"")
        diff_ids.append("sha256:" + hashlib.sha256(claimed).hexdigest())
    image_config = {"architecture": "amd64", "os": "linux",
                    "config": (config or {}).get("config", {}),
                    "history": (config or {}).get("history", []),
                    "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    raw_config = canonical_json(image_config)
    config_desc = Descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, layout.put_bytes(raw_config),
                             len(raw_config))
    manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                "config": config_desc.to_json(), "layers": [d.to_json() for d in descriptors]}
    raw = canonical_json(manifest)
    layout.set_tag(tag, Descriptor(manifest["mediaType"], layout.put_bytes(raw), len(raw)))
    return f"oci:{root}:{tag}"


class TarBuilder:
    """Tar bytes from entries, with whatever headers a test needs."""

    def __init__(self, fmt: int = tarfile.PAX_FORMAT) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=fmt)

    def _info(self, name: str, kind: bytes, mode: int, **fields) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode = kind, mode
        info.mtime = fields.pop("mtime", 1_600_000_000)
        for key, value in fields.items():
            setattr(info, key, value)
        return info

    def file(self, name: str, data: bytes, mode: int = 0o644, **fields) -> TarBuilder:
        info = self._info(name, tarfile.REGTYPE, mode, size=len(data), **fields)
        self.tar.addfile(info, io.BytesIO(data))
        return self

    def dir(self, name: str, mode: int = 0o755, **fields) -> TarBuilder:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, **fields))
        return self

    def symlink(self, name: str, target: str, mode: int = 0o777, **fields) -> TarBuilder:
        self.tar.addfile(self._info(name, tarfile.SYMTYPE, mode, linkname=target, **fields))
        return self

    def sparse(self, name: str, real_size: int, regions: list[tuple[int, bytes]]) -> TarBuilder:
        """A PAX (GNU 1.0) sparse member: the map, then each region's data, in order."""
        numbers = [len(regions)] + [n for offset, data in regions for n in (offset, len(data))]
        head = "".join(f"{n}\n" for n in numbers).encode()
        payload = head.ljust(-(-len(head) // 512) * 512, b"\0") + b"".join(d for _, d in regions)
        info = self._info(name, tarfile.REGTYPE, 0o644, size=len(payload))
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                            "GNU.sparse.name": name, "GNU.sparse.realsize": str(real_size)}
        self.tar.addfile(info, io.BytesIO(payload))
        return self

    def hardlink(self, name: str, target: str) -> TarBuilder:
        self.tar.addfile(self._info(name, tarfile.LNKTYPE, 0o644, linkname=target))
        return self

    def device(self, name: str, kind: bytes, major: int, minor: int, mode: int = 0o600
               ) -> TarBuilder:
        self.tar.addfile(self._info(name, kind, mode, devmajor=major, devminor=minor))
        return self

    def fifo(self, name: str) -> TarBuilder:
        self.tar.addfile(self._info(name, tarfile.FIFOTYPE, 0o644))
        return self

    def bytes(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


def gnu_tar(directory: Path, *args: str) -> bytes:
    """A tar made by GNU tar (for sparse formats Python cannot write)."""
    return subprocess.run(["tar", "-C", str(directory), "-cf", "-", *args, "."],
                          check=True, capture_output=True).stdout


def sparse_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    with open(root / "sparse", "wb") as f:
        f.write(b"head" * 1000)
        f.seek(3 << 20)
        f.write(b"middle")
        f.truncate(6 << 20)
    os.utime(root / "sparse", (1_600_000_000, 1_600_000_000))
    return root


def umoci_image(layout: Path, tag: str, trees: list[Path], config: dict | None = None) -> str:
    """An image made by umoci: one layer per tree, each tree copied over the last."""
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:{tag}"], check=True)
    bundle = layout.parent / f"bundle-{tag}-{time.monotonic_ns()}"
    for tree in trees:
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                       capture_output=True)
        subprocess.run(["cp", "-a", f"{tree}/.", str(bundle / "rootfs")], check=True)
        subprocess.run(["umoci", "repack", "--image", f"{layout}:{tag}", str(bundle)], check=True)
        subprocess.run(["rm", "-rf", str(bundle)], check=True)
    for key, values in (config or {}).items():
        for value in values:
            subprocess.run(["umoci", "config", "--image", f"{layout}:{tag}", key, value],
                           check=True, capture_output=True)
    return f"oci:{layout}:{tag}"


def umoci_unpack(reference: str, bundle: Path) -> Path:
    subprocess.run(["umoci", "unpack", "--image", reference.removeprefix("oci:"), str(bundle)],
                   check=True, capture_output=True)
    return bundle / "rootfs"


def is_dir(mode: int) -> bool:
    return stat.S_ISDIR(mode)
