"""Extended attributes (xattrs.py): name prefixes, inline areas."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from erofsd.erofs import xattrs


@given(st.lists(st.tuples(st.sampled_from([b"user.", b"trusted.", b"security."]),
                          st.binary(min_size=1, max_size=60), st.binary(max_size=300)),
                max_size=20))
def test_xattr_area_round_trip(items):
    packed, wanted = [], []
    for prefix, suffix, value in items:
        index, found_suffix = xattrs.split_name(prefix + suffix)
        assert found_suffix == suffix
        packed.append(xattrs.pack_entry(index, suffix, value))
        wanted.append((prefix + suffix, value))
    area, icount = xattrs.pack_inline([], packed)
    assert len(area) == xattrs.area_size(icount)
    assert xattrs.parse_inline(area, lambda i: None, "test") == wanted


def test_xattr_names_that_cannot_be_stored():
    assert xattrs.split_name(b"system.posix_acl_access") == (2, b"")
    assert xattrs.split_name(b"system.other") is None
    assert xattrs.split_name(b"user.") is None
    assert xattrs.split_name(b"user." + b"x" * 256) is None
