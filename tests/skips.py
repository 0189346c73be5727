"""Why a test cannot run here (root, the kernel's EROFS, a tool, /dev/fuse), as skip marks.

On this project's machines every one of them runs; elsewhere each skips with its reason.
"""

from __future__ import annotations

import os
import shutil

import pytest

from erofsd.kernel.mount import kernel_has_erofs


def _kernel_reason() -> str | None:
    if os.geteuid() != 0:
        return "kernel mounts need root"
    if not kernel_has_erofs():
        return "the kernel has no EROFS (/proc/filesystems)"
    return None


def daemon_reason() -> str | None:
    if os.geteuid() != 0:
        return "the daemon mounts filesystems: needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


requires_kernel = pytest.mark.skipif(_kernel_reason() is not None, reason=_kernel_reason() or "")
requires_daemon = pytest.mark.skipif(daemon_reason() is not None, reason=daemon_reason() or "")


def requires_tool(name: str):
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} is not installed")
