"""The fanotify decoder over buffers built byte by byte and over a buffer recorded from the
kernel (tests/unit/data/fanotify-workload.bin: :func:`tests.support.fanotify.the_workload` on a
tmpfs under Linux 6.18)."""

from __future__ import annotations

import struct

import pytest

from pirsyncd.source.fanotify_events import (
    FAN_ATTRIB,
    FAN_CLOSE_WRITE,
    FAN_CREATE,
    FAN_DELETE,
    FAN_DELETE_SELF,
    FAN_EVENT_INFO_TYPE_DFID,
    FAN_EVENT_INFO_TYPE_PIDFD,
    FAN_MODIFY,
    FAN_MOVE_SELF,
    FAN_ONDIR,
    FAN_Q_OVERFLOW,
    FAN_RENAME,
    Entry,
    FanotifyEvent,
    MalformedBuffer,
    describe_mask,
    parse_events,
)
from tests.support.fanotify import (
    RECORDED_WORKLOAD,
    entry_event,
    event,
    handle,
    info_record,
    rename_event,
)

ROOT, SUB, FILE = handle(1), handle(2), handle(3)


def test_an_entry_event_names_the_parent_by_handle_and_the_entry_by_name() -> None:
    (decoded,) = parse_events(entry_event(FAN_CREATE | FAN_ONDIR, ROOT, "new dir"))
    assert decoded == FanotifyEvent(FAN_CREATE | FAN_ONDIR, 4242, Entry(ROOT, "new dir"))
    assert decoded.is_dir and not decoded.overflow


def test_the_object_s_own_handle_comes_as_fid() -> None:
    (decoded,) = parse_events(entry_event(FAN_MODIFY | FAN_CLOSE_WRITE, SUB, "f", target=FILE))
    assert decoded.entry == Entry(SUB, "f") and decoded.object == FILE and not decoded.is_dir


def test_a_rename_carries_both_ends() -> None:
    (decoded,) = parse_events(rename_event(FAN_RENAME | FAN_ONDIR, (ROOT, "old"), (SUB, "new"), target=FILE))
    assert (decoded.old, decoded.new) == (Entry(ROOT, "old"), Entry(SUB, "new"))
    assert (decoded.object, decoded.entry) == (FILE, None)


def test_events_follow_one_another_in_kernel_order() -> None:
    buffer = b"".join([entry_event(FAN_CREATE, ROOT, "a"), entry_event(FAN_DELETE, ROOT, "a"),
                       event(FAN_Q_OVERFLOW)])
    assert [(each.mask, each.entry) for each in parse_events(buffer)] == [
        (FAN_CREATE, Entry(ROOT, "a")), (FAN_DELETE, Entry(ROOT, "a")), (FAN_Q_OVERFLOW, None)]
    assert parse_events(buffer)[-1].overflow


def test_names_that_are_not_utf8_survive_and_padding_is_not_part_of_a_name() -> None:
    hostile = b"caf\xe9 \n\x01".decode("utf-8", "surrogateescape")
    for name in (hostile, "a", "ab", "abc", "abcd"):  # every padding length
        (decoded,) = parse_events(entry_event(FAN_CREATE, ROOT, name))
        assert decoded.entry == Entry(ROOT, name)


def test_a_directory_record_without_name_and_unknown_records_are_read_past() -> None:
    pidfd = struct.pack("=BBHi", FAN_EVENT_INFO_TYPE_PIDFD, 0, 8, 7)
    (decoded,) = parse_events(event(FAN_ATTRIB | FAN_ONDIR, pidfd, info_record(FAN_EVENT_INFO_TYPE_DFID, SUB)))
    assert decoded.entry == Entry(SUB, "")


@pytest.mark.parametrize(("buffer", "problem"), [
    (event(FAN_CREATE)[:20], "less than an event's metadata"),
    (struct.pack("=IBBHQii", 24, 2, 0, 24, FAN_CREATE, -1, 0), "version 2"),
    (event(FAN_CREATE, info_record(FAN_EVENT_INFO_TYPE_DFID, ROOT))[:-4], "does not fit the buffer"),
], ids=["short", "version", "truncated"])
def test_a_buffer_it_does_not_understand_is_an_error_not_a_guess(buffer: bytes, problem: str) -> None:
    with pytest.raises(MalformedBuffer, match=problem):
        parse_events(buffer)


def test_describe_mask_uses_the_kernel_names() -> None:
    assert describe_mask(FAN_RENAME | FAN_ONDIR | 0x20000) == "FAN_RENAME|FAN_ONDIR|0x20000"


def test_a_recorded_buffer_decodes_to_the_workload_s_events() -> None:
    """What the kernel queued for the recorded workload (merged events included: h's create and
    delete in one, as the kernel merges a name's events)."""
    events = parse_events(RECORDED_WORKLOAD.read_bytes())
    seen = [(describe_mask(each.mask), each.entry.name if each.entry else None,
             (each.old.name, each.new.name) if each.old and each.new else None) for each in events]
    assert seen[:8] == [
        ("FAN_CREATE|FAN_ONDIR", "t", None), ("FAN_CREATE|FAN_ONDIR", "n", None),
        ("FAN_CREATE|FAN_ONDIR", "b", None), ("FAN_CREATE|FAN_ONDIR", "c", None),
        ("FAN_CREATE|FAN_ONDIR", "a", None), ("FAN_CREATE", "f", None),
        ("FAN_MODIFY|FAN_CLOSE_WRITE", "f", None), ("FAN_RENAME", None, ("f", "g"))]
    assert ("FAN_RENAME|FAN_ONDIR", None, ("n", "m")) in seen
    assert ("FAN_CREATE|FAN_DELETE", "h", None) in seen
    assert ("FAN_ATTRIB|FAN_ONDIR", ".", None) in seen  # chmod of a directory: a self event
    assert seen[-1] == ("FAN_DELETE|FAN_ONDIR", "t", None)
    by_name = {each.entry.name: each.entry.directory for each in events if each.entry and each.mask & FAN_CREATE}
    rename = next(each for each in events if each.mask == FAN_RENAME)
    # f moved from the directory it was created in (c) to another (a).
    assert rename.old is not None and rename.new is not None
    assert rename.old.directory == by_name["f"] and rename.new.directory != rename.old.directory
    directory_rename = next(each for each in events if each.mask == FAN_RENAME | FAN_ONDIR)
    assert directory_rename.old is not None and directory_rename.new is not None
    assert directory_rename.old.directory == directory_rename.new.directory == by_name["n"]
    # Self events of deleted directories name them "."; a file's, by its own handle alone.
    assert any(each.mask == FAN_DELETE_SELF | FAN_ONDIR and each.entry and each.entry.name == "." for each in events)
    assert any(each.mask & FAN_MOVE_SELF and each.entry is None and each.object is not None for each in events)


def test_a_handle_record_cut_short_is_an_error() -> None:
    record = info_record(FAN_EVENT_INFO_TYPE_DFID, ROOT)
    short = struct.pack("=BBH", FAN_EVENT_INFO_TYPE_DFID, 0, 12) + record[4:12]  # header and fsid only
    with pytest.raises(MalformedBuffer, match="does not fit its 12 bytes"):
        parse_events(event(FAN_CREATE, short))
    lying = record[:12] + struct.pack("=Ii", 64, 1) + record[20:]  # says 64 handle bytes, has 8
    with pytest.raises(MalformedBuffer, match="does not fit its"):
        parse_events(event(FAN_CREATE, lying))
