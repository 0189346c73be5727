"""The CRI API subset of api.proto, compiled on first import (grpcio-tools, into a temp dir)."""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

_out = tempfile.mkdtemp(prefix="erofsd-cri-")
_here = Path(__file__).resolve().parent
if protoc.main(["protoc", f"-I{_here}", f"--python_out={_out}", f"--grpc_python_out={_out}",
                str(_here / "api.proto")]) != 0:
    raise ImportError("cannot compile tests/cri/api.proto")
sys.path.insert(0, _out)
api_pb2 = importlib.import_module("api_pb2")
api_pb2_grpc = importlib.import_module("api_pb2_grpc")
sys.path.remove(_out)
