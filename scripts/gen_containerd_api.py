"""Generate the Python gRPC stubs of containerd's API from Debian's .proto files.

    python scripts/gen_containerd_api.py [--check]

containerd's own .proto files (golang-github-containerd-containerd-dev) go
through grpcio-tools into src/erofsd/containerd/api/, which git ignores:
nothing generated is committed. Two edits make them compile for Python:
the gogoproto options (Go code generation hints) are dropped, and each file
is placed under erofsd/containerd/api/ with its imports rewritten to match,
so the generated modules import each other as erofsd.containerd.api.*.
Package and service names are untouched: on the wire this is containerd's
API. --check only says whether the stubs are there and up to date.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tempfile
from pathlib import Path

SOURCE = Path("/usr/share/gocode/src/github.com/containerd/containerd/api")
PROTOS = ["types/mount.proto", "types/descriptor.proto",
          "services/snapshots/v1/snapshots.proto", "services/content/v1/content.proto",
          "services/images/v1/images.proto", "services/leases/v1/leases.proto",
          "services/version/v1/version.proto"]
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src"
PACKAGE = "erofsd/containerd/api"
STAMP = OUT / PACKAGE / ".generated"

GOGO_IMPORT = re.compile(r'^import weak "gogoproto/gogo\.proto";\n', re.M)
GOGO_OPTION = re.compile(r"^\s*option \(gogoproto\.[^;]*;\n", re.M)
GOGO_FIELD = re.compile(r"\s*\[\(gogoproto\.[^\]]*\]")
CONTAINERD_IMPORT = re.compile(r'import "github\.com/containerd/containerd/api/([^"]+)";')


def plain(text: str) -> str:
    """A .proto without gogoproto, its containerd imports under erofsd/containerd/api/."""
    text = GOGO_IMPORT.sub("", text)
    text = GOGO_OPTION.sub("", text)
    text = GOGO_FIELD.sub("", text)
    return CONTAINERD_IMPORT.sub(lambda m: f'import "{PACKAGE}/{m.group(1)}";', text)


def fingerprint() -> str:
    import grpc_tools
    digest = hashlib.sha256(getattr(grpc_tools, "__version__", "").encode())
    for name in PROTOS:
        digest.update((SOURCE / name).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def generate() -> None:
    from grpc_tools import protoc
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        for name in PROTOS:
            target = Path(tmp) / PACKAGE / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(plain((SOURCE / name).read_text()))
        args = ["protoc", f"-I{tmp}", f"-I{well_known}", f"--python_out={OUT}",
                f"--grpc_python_out={OUT}", *[f"{PACKAGE}/{name}" for name in PROTOS]]
        if protoc.main(args) != 0:
            sys.exit("gen_containerd_api: protoc failed")
    for directory in [OUT / PACKAGE, *(p for p in (OUT / PACKAGE).rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    STAMP.write_text(fingerprint())


def main() -> None:
    if not SOURCE.is_dir():
        sys.exit(f"gen_containerd_api: {SOURCE} is missing "
                 "(apt-get install golang-github-containerd-containerd-dev)")
    current = STAMP.exists() and STAMP.read_text() == fingerprint()
    if "--check" in sys.argv:
        sys.exit(0 if current else 1)
    if not current:
        generate()
        print(f"gen_containerd_api: containerd's API stubs generated in {OUT / PACKAGE}")


if __name__ == "__main__":
    main()
