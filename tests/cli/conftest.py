"""The CLI tests' image: the edge tree, built once per module through the CLI itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from clikit import ok
from trees import edge_tree


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cli")
    src = edge_tree(base / "src")
    out = base / "layout"
    ok("build", src, out, "--tag", "v1", "--chunk-size", "64K", "--quiet")
    return src, out
