"""Layer trees (tree.py): the names EROFS cannot store."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("name", [b"", b"x" * 256, b"a/b", b"nul\0", b".", b".."])
def test_names_erofs_cannot_store_are_refused(name):
    from erofsd.erofs.tree import check_name
    from erofsd.errors import NameNotStorable
    with pytest.raises(NameNotStorable, match="cannot be stored"):
        check_name(name, "layer/path")
