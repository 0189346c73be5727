"""The fanotify wire format (kernel/fanotify.py): events parsed, answers packed; no root needed."""

from __future__ import annotations

import errno

from erofsd.kernel import fanotify
from erofsd.kernel.fanotify import (
    FAN_ALLOW,
    FAN_DENY,
    FAN_EVENT_INFO_TYPE_RANGE,
    FAN_PRE_ACCESS,
    INFO_HEADER,
    METADATA,
    RANGE,
    RESPONSE,
)


def event(fd: int, pid: int, offset: int | None = None, count: int = 0) -> bytes:
    """One event as the kernel writes it: metadata, then a range record if there is one."""
    info = b""
    if offset is not None:  # RANGE skips its header (4 bytes): write it in front
        info = (INFO_HEADER.pack(FAN_EVENT_INFO_TYPE_RANGE, 0, RANGE.size)
                + RANGE.pack(0, offset, count)[INFO_HEADER.size:])
    length = METADATA.size + len(info)
    return METADATA.pack(length, 3, 0, METADATA.size, FAN_PRE_ACCESS, fd, pid) + info


def test_struct_sizes_are_the_kernels():
    # struct fanotify_event_metadata, fanotify_event_info_header, _info_range, fanotify_response
    assert (METADATA.size, INFO_HEADER.size, RANGE.size, RESPONSE.size) == (24, 4, 24, 8)


def test_events_with_ranges_are_parsed_in_order():
    buf = event(7, 100, 4096, 65536) + event(8, 101, 1 << 40, 1)
    assert fanotify.parse_events(buf) == [
        fanotify.Event(FAN_PRE_ACCESS, 7, 100, 4096, 65536),
        fanotify.Event(FAN_PRE_ACCESS, 8, 101, 1 << 40, 1)]


def test_an_event_without_a_range_reads_as_the_whole_file_unknown():
    assert fanotify.parse_events(event(5, 9)) == [fanotify.Event(FAN_PRE_ACCESS, 5, 9, 0, 0)]


def test_a_torn_or_lying_record_ends_the_list_without_raising():
    whole = event(7, 100, 0, 10)
    assert fanotify.parse_events(whole + whole[:30]) == fanotify.parse_events(whole)
    too_long = bytearray(whole)
    too_long[0] = 200  # event_len past the buffer
    assert fanotify.parse_events(bytes(too_long)) == []
    bad_info = bytearray(whole)
    bad_info[METADATA.size + 2:METADATA.size + 4] = (2).to_bytes(2, "little")  # info len < 4
    assert fanotify.parse_events(bytes(bad_info)) == [fanotify.Event(FAN_PRE_ACCESS, 7, 100,
                                                                      0, 0)]
    assert fanotify.parse_events(b"\0" * 8) == []


def test_answers_allow_or_deny_with_an_errno_the_kernel_takes():
    assert fanotify.response(12, True) == RESPONSE.pack(12, FAN_ALLOW)
    assert fanotify.response(12, False, errno.ENOSPC) == \
        RESPONSE.pack(12, FAN_DENY | errno.ENOSPC << 24)
    # the kernel refuses most errnos in a denial: those become EIO, never a silent allow
    assert fanotify.response(12, False, errno.ENOENT) == RESPONSE.pack(12, FAN_DENY | 5 << 24)
