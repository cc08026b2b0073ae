"""Decode what a read of a fanotify group returns into events (pure: no I/O).

A group made with ``FAN_REPORT_DFID_NAME | FAN_REPORT_FID`` (see :mod:`pirsyncd.source.fanotify`)
reports no file descriptors: each event is its metadata followed by information records that
name objects by *file handle*. The records this module decodes (fanotify(7)):

- ``FAN_EVENT_INFO_TYPE_DFID_NAME``: the parent directory's handle and the entry's name (a
  self event of a directory, such as its DELETE_SELF, names it ``"."``);
  ``FAN_EVENT_INFO_TYPE_DFID``: the directory alone;
- ``FAN_EVENT_INFO_TYPE_FID``: the object itself;
- ``FAN_EVENT_INFO_TYPE_OLD_DFID_NAME`` / ``NEW_DFID_NAME``: both ends of a ``FAN_RENAME``.

Other records (a pidfd, an error count) are skipped. Events are plain namedtuples a test can
build by hand; names mirror the kernel's, so the man page is the documentation.

>>> metadata = struct.pack("=IBBHQii", 24, 3, 0, 24, FAN_Q_OVERFLOW, -1, 0)
>>> [event.overflow for event in parse_events(metadata)]
[True]
"""

from __future__ import annotations

import struct
import sys
from typing import NamedTuple

# Event bits (linux/fanotify.h); the ones a filesystem mark of ours asks for, and the overflow.
FAN_ACCESS = 0x00000001
FAN_MODIFY = 0x00000002
FAN_ATTRIB = 0x00000004
FAN_CLOSE_WRITE = 0x00000008
FAN_MOVED_FROM = 0x00000040
FAN_MOVED_TO = 0x00000080
FAN_CREATE = 0x00000100
FAN_DELETE = 0x00000200
FAN_DELETE_SELF = 0x00000400
FAN_MOVE_SELF = 0x00000800
FAN_Q_OVERFLOW = 0x00004000
FAN_FS_ERROR = 0x00008000
FAN_RENAME = 0x10000000
FAN_ONDIR = 0x40000000

# Information record types (struct fanotify_event_info_header.info_type).
FAN_EVENT_INFO_TYPE_FID = 1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_DFID = 3
FAN_EVENT_INFO_TYPE_PIDFD = 4
FAN_EVENT_INFO_TYPE_ERROR = 5
FAN_EVENT_INFO_TYPE_OLD_DFID_NAME = 10
FAN_EVENT_INFO_TYPE_OLD_DFID = 11
FAN_EVENT_INFO_TYPE_NEW_DFID_NAME = 12
FAN_EVENT_INFO_TYPE_NEW_DFID = 13

FANOTIFY_METADATA_VERSION = 3
FAN_NOFD = -1

# struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid.
METADATA = struct.Struct("=IBBHQii")
# struct fanotify_event_info_header: info_type, pad, len; then __kernel_fsid_t (two ints), then
# struct file_handle: handle_bytes, handle_type, f_handle[handle_bytes].
INFO_HEADER = struct.Struct("=BBH")
FID_HEADER = struct.Struct("=BBH8sIi")


class FileHandle(NamedTuple):
    """An object's identity as the kernel reports it: the file system's id and the handle
    ``open_by_handle_at`` takes (its type and opaque bytes). Equal handles are the same object."""

    fsid: bytes
    handle_type: int
    handle: bytes


class Entry(NamedTuple):
    """A name in a directory: ``directory`` is the parent's handle ("" for a DFID record)."""

    directory: FileHandle
    name: str


class FanotifyEvent(NamedTuple):
    """One event: its mask, the process that caused it, and what its records named."""

    mask: int
    pid: int = 0
    entry: Entry | None = None  # DFID_NAME (or DFID, with the name "")
    object: FileHandle | None = None  # FID
    old: Entry | None = None  # FAN_RENAME: where it was
    new: Entry | None = None  # FAN_RENAME: where it is

    @property
    def overflow(self) -> bool:
        """Events were lost (the queue was full)."""
        return bool(self.mask & FAN_Q_OVERFLOW)

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & FAN_ONDIR)


UNRESOLVABLE = "unresolvable"
UNREACHABLE = "unreachable"


class Gone(NamedTuple):
    """What a resolver answers for a handle whose directory no longer exists: ``reason`` is "stale" (ESTALE: the handle
    names nothing now) or "deleted" (still held open somewhere), with ``last_path`` the path it
    had where the kernel still knows it; or "unresolvable": the kernel failed otherwise (the
    errno's name in ``last_path``), so where its events happened is not known; or
    "unreachable": it exists, but not where the source's mount reaches (beside a source that is
    a bind mount of a subdirectory), so it is outside the source — for now: it may be moved in."""

    reason: str
    last_path: str = ""


class MalformedBuffer(ValueError):
    """The buffer is not what this decoder understands (a metadata version it does not know,
    a length that does not fit): a bug or a kernel ABI change, never a user's error."""


def parse_events(buffer: bytes) -> list[FanotifyEvent]:
    """The events of one read (``bytes``, as ``os.read`` returns), in kernel order."""
    events = []
    offset = 0
    end = len(buffer)
    while offset < end:
        if end - offset < METADATA.size:
            raise MalformedBuffer(f"{end - offset} bytes left at offset {offset}: less than an event's metadata")
        event_len, version, _, metadata_len, mask, _, pid = METADATA.unpack_from(buffer, offset)
        if version != FANOTIFY_METADATA_VERSION:
            raise MalformedBuffer(f"fanotify metadata version {version}, expected {FANOTIFY_METADATA_VERSION}")
        if event_len < metadata_len or metadata_len < METADATA.size or offset + event_len > end:
            raise MalformedBuffer(f"an event of {event_len} bytes at offset {offset} does not fit the buffer")
        events.append(_decode_event(buffer, offset + metadata_len, offset + event_len, mask, pid))
        offset += event_len
    return events


# Which field of FanotifyEvent (by index) each file handle record fills.
_ENTRY, _OBJECT, _OLD, _NEW = 2, 3, 4, 5
_FIELD = {FAN_EVENT_INFO_TYPE_DFID_NAME: _ENTRY, FAN_EVENT_INFO_TYPE_DFID: _ENTRY, FAN_EVENT_INFO_TYPE_FID: _OBJECT,
          FAN_EVENT_INFO_TYPE_OLD_DFID_NAME: _OLD, FAN_EVENT_INFO_TYPE_OLD_DFID: _OLD,
          FAN_EVENT_INFO_TYPE_NEW_DFID_NAME: _NEW, FAN_EVENT_INFO_TYPE_NEW_DFID: _NEW}
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_new_tuple = tuple.__new__  # builds the namedtuples without their Python-level __new__ (the hot path)


def _decode_event(buffer: bytes, offset: int, end: int, mask: int, pid: int) -> FanotifyEvent:
    """One event's records, from ``offset`` to ``end``. A name is what precedes the first NUL
    after the handle (the kernel pads the record with NULs)."""
    fields: list[object] = [mask, pid, None, None, None, None]
    while offset < end:
        if end - offset >= FID_HEADER.size:  # the common case: read a handle record's header at once
            info_type, _, length, fsid, handle_bytes, handle_type = FID_HEADER.unpack_from(buffer, offset)
        else:
            info_type, _, length = INFO_HEADER.unpack_from(buffer, offset)
            fsid, handle_bytes, handle_type = b"", 0, 0
        record_end = offset + length
        if length < INFO_HEADER.size or record_end > end:
            raise MalformedBuffer(f"an information record of {length} bytes at offset {offset} does not fit its event")
        field = _FIELD.get(info_type)
        if field is not None:
            if length < FID_HEADER.size or offset + FID_HEADER.size + handle_bytes > record_end:
                raise MalformedBuffer(f"a file handle record at offset {offset} does not fit its {length} bytes")
            start = offset + FID_HEADER.size
            name_start = start + handle_bytes
            handle = _new_tuple(FileHandle, (fsid, handle_type, buffer[start:name_start]))
            if field == _OBJECT:
                fields[_OBJECT] = handle
            else:
                name_end = buffer.find(b"\0", name_start, record_end)
                name = buffer[name_start:record_end if name_end < 0 else name_end]
                fields[field] = _new_tuple(Entry, (handle, name.decode(_FS_ENCODING, _FS_ERRORS)))
        offset = record_end
    return _new_tuple(FanotifyEvent, fields)


def describe_mask(mask: int) -> str:
    """The kernel's names of a mask's bits, for debug lines.

    >>> describe_mask(FAN_CREATE | FAN_ONDIR)
    'FAN_CREATE|FAN_ONDIR'
    """
    names = [name for name, bit in _MASK_NAMES if mask & bit]
    unknown = mask & ~sum(bit for _, bit in _MASK_NAMES)
    return "|".join(names + ([f"{unknown:#x}"] if unknown else [])) or "0"


_MASK_NAMES = tuple((name, value) for name, value in globals().items()
                    if name.startswith("FAN_") and not name.startswith(("FAN_EVENT_INFO", "FAN_NOFD"))
                    and isinstance(value, int))
