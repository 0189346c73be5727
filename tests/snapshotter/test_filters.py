"""containerd's filter syntax (snapshotter/filters.py)."""

from __future__ import annotations

import pytest

from erofsd.errors import InvalidArgument
from erofsd.snapshotter.filters import Selector, matcher, parse

INFO = {"name": "default/3/sha256:ab", "parent": "", "kind": "committed",
        "labels": {"containerd.io/snapshot.ref": "sha256:ab", "team": "storage"}}


def fields(path: list[str]) -> tuple[str, bool]:
    if path[0] == "labels":
        key = ".".join(path[1:])
        return INFO["labels"].get(key, ""), key in INFO["labels"]
    return (INFO[path[0]], True) if path[0] in INFO else ("", False)


def test_what_containerds_metadata_store_sends_parses():
    assert parse('labels."containerd.io/snapshot.ref"==sha256:ab,parent==""') == [
        Selector(("labels", "containerd.io/snapshot.ref"), "==", "sha256:ab"),
        Selector(("parent",), "==", "")]


@pytest.mark.parametrize("filters, matches", [
    ([], True),
    (['labels."containerd.io/snapshot.ref"==sha256:ab,parent==""'], True),
    (['labels."containerd.io/snapshot.ref"==sha256:ab,parent=="default/2/x"'], False),
    (["labels.team"], True), (["labels.other"], False),
    (["kind!=active"], True), (["kind==active", "name~=^default/"], True),
    (["name~=sha256:[a-f]+$"], True), (['name~="^other"'], False),
    (["name~=/^default/"], True),  # ~= may quote its expression with slashes
    (['labels."team"=="storage"'], True), (['labels."team"=="stor\\u0061ge"'], True),
])
def test_selectors_match_as_containerds_do(filters, matches):
    assert matcher(filters)(fields) is matches


@pytest.mark.parametrize("bad", ['labels."open', "name==x,", "==x", "name~=(", "a b"])
def test_bad_filters_are_invalid_arguments(bad):
    with pytest.raises(InvalidArgument, match="filter"):
        parse(bad)
