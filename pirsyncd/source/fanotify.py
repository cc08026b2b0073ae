"""A thin binding of fanotify(7), in inotify_simple's style: the only user of the raw
``fanotify_init``, ``fanotify_mark``, ``name_to_handle_at`` and ``open_by_handle_at`` calls.

:class:`Fanotify` *is* a file object (``fileno()``, ``read()``, ``close()``), so it goes
straight into ``selectors``; what it reads is decoded by the pure
:func:`pirsyncd.source.fanotify_events.parse_events`. Flag names are the kernel's.

A group made with the default flags reports, for a *filesystem mark*, every creation,
deletion, rename, write and attribute change on the whole file system, naming the parent
directory by file handle and the entry by name (Linux >= 5.9; ``FAN_RENAME`` >= 5.17)::

    with Fanotify() as group:
        group.mark("/srv/www", WATCH_MASK)              # needs CAP_SYS_ADMIN
        events = parse_events(group.read())
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from pirsyncd.source.fanotify_events import (
    FAN_ATTRIB,
    FAN_CLOSE_WRITE,
    FAN_CREATE,
    FAN_DELETE,
    FAN_DELETE_SELF,
    FAN_MODIFY,
    FAN_MOVE_SELF,
    FAN_ONDIR,
    FAN_RENAME,
)

# fanotify_init flags.
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_NOTIF = 0x00000000
FAN_UNLIMITED_QUEUE = 0x00000010
FAN_UNLIMITED_MARKS = 0x00000020
FAN_REPORT_TID = 0x00000100
FAN_REPORT_FID = 0x00000200
FAN_REPORT_DIR_FID = 0x00000400
FAN_REPORT_NAME = 0x00000800
FAN_REPORT_TARGET_FID = 0x00001000
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME

# fanotify_mark flags.
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_DONT_FOLLOW = 0x00000004
FAN_MARK_ONLYDIR = 0x00000008
FAN_MARK_INODE = 0x00000000
FAN_MARK_MOUNT = 0x00000010
FAN_MARK_FILESYSTEM = 0x00000100

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000  # name_to_handle_at: the handle of dirfd itself (path "")
MAX_HANDLE_SZ = 128

# What pirsyncd asks for: a group that names objects by handle and entries by name, and a mark
# for every change a mirror must follow (MOVED_FROM/MOVED_TO are left out: FAN_RENAME carries
# both ends of a rename in one event).
GROUP_FLAGS = FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_REPORT_FID
WATCH_MASK = (FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_MODIFY | FAN_CLOSE_WRITE | FAN_ATTRIB
              | FAN_MOVE_SELF | FAN_DELETE_SELF | FAN_ONDIR)
# Enough for one event with the longest names the records can carry (fanotify(7) asks for a
# buffer that fits at least one event); a read returns as many whole events as fit.
READ_SIZE = 64 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.fanotify_mark.restype = ctypes.c_int
_libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                    ctypes.c_int]
_libc.name_to_handle_at.restype = ctypes.c_int
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.open_by_handle_at.restype = ctypes.c_int


def _os_error(what: str, filename: str | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}", filename)


def fanotify_init(flags: int, event_f_flags: int = os.O_RDONLY | os.O_LARGEFILE) -> int:
    """fanotify_init(2): a new group's descriptor; OSError as the kernel says (ENOSYS: no
    fanotify; EINVAL: a flag the kernel does not know; EPERM: the flags need CAP_SYS_ADMIN)."""
    descriptor = _libc.fanotify_init(flags, event_f_flags)
    if descriptor < 0:
        raise _os_error("fanotify_init")
    return int(descriptor)


def fanotify_mark(group_fd: int, flags: int, mask: int, path: str, dirfd: int = AT_FDCWD) -> None:
    """fanotify_mark(2) on ``path`` (relative to ``dirfd``); OSError as the kernel says."""
    if _libc.fanotify_mark(group_fd, flags, mask, dirfd, os.fsencode(path)) < 0:
        raise _os_error("fanotify_mark", path)


def name_to_handle_at(path: str, dirfd: int = AT_FDCWD, flags: int = 0) -> tuple[int, bytes, int]:
    """name_to_handle_at(2): the handle of ``path`` as (handle_type, handle bytes, mount id),
    the same bytes a FID record of that object carries."""
    buffer = ctypes.create_string_buffer(8 + MAX_HANDLE_SZ)
    struct.pack_into("=Ii", buffer, 0, MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(dirfd, os.fsencode(path), buffer, ctypes.byref(mount_id), flags) < 0:
        raise _os_error("name_to_handle_at", path)
    handle_bytes, handle_type = struct.unpack_from("=Ii", buffer)
    return handle_type, buffer.raw[8:8 + handle_bytes], mount_id.value


def open_by_handle_at(mount_fd: int, handle_type: int, handle: bytes, flags: int = os.O_PATH) -> int:
    """open_by_handle_at(2): a descriptor of the object ``handle`` names on the file system of
    ``mount_fd`` (needs CAP_DAC_READ_SEARCH); OSError ESTALE when the object is gone."""
    file_handle = struct.pack("=Ii", len(handle), handle_type) + handle
    descriptor = _libc.open_by_handle_at(mount_fd, file_handle, flags | os.O_CLOEXEC)
    if descriptor < 0:
        raise _os_error("open_by_handle_at")
    return int(descriptor)


class Fanotify:
    """A fanotify group as a file object: ``fileno()`` for ``selectors``, ``read()`` for the
    raw bytes of the queued events (``b""`` when none are queued), ``close()``."""

    def __init__(self, flags: int = GROUP_FLAGS, nonblocking: bool = True) -> None:
        self._fd = fanotify_init(flags | FAN_CLOEXEC | (FAN_NONBLOCK if nonblocking else 0))

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on a closed fanotify group")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Fanotify:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def mark(self, path: str, mask: int = WATCH_MASK, flags: int = FAN_MARK_ADD | FAN_MARK_FILESYSTEM) -> None:
        """Add (or with FAN_MARK_REMOVE in ``flags``, remove) a mark; a filesystem mark by default."""
        fanotify_mark(self.fileno(), flags, mask, path)

    def read(self, size: int = READ_SIZE) -> bytes:
        """The queued events that fit in ``size`` bytes; ``b""`` when none are queued (a
        non-blocking group) — never a partial event."""
        try:
            return os.read(self.fileno(), size)
        except BlockingIOError:
            return b""
        except OSError as error:
            if error.errno == errno.EAGAIN:
                return b""
            raise
