"""Whether a fanotify filesystem mark can watch a source here, and if not, why (one line).

The probe does what the watcher would: it makes a group, places the filesystem mark with
pirsyncd's mask on the source's file system, and opens the source by its file handle, then
undoes it all. What it can meet (checked on Linux 6.18):

- no fanotify in the kernel (ENOSYS), or one older than 5.9 (EINVAL: no FAN_REPORT_DFID_NAME),
  or without ``FAN_RENAME`` (5.17, backported to 5.15.154 and 5.10.220);
- no CAP_SYS_ADMIN: the group is made, the mark refused (EPERM); no CAP_DAC_READ_SEARCH:
  handles do not open (EPERM); a seccomp filter without fanotify_init (systemd's
  ``SystemCallFilter=@system-service``, the default unit's): the group refused (EPERM);
- overlayfs with default options (EOPNOTSUPP: no file handles to report), FUSE (ENODEV: a
  zero fsid), a path inside a btrfs subvolume other than the file system's top (EXDEV);
- ``fs.fanotify.max_user_groups`` or ``max_user_marks`` used up (EMFILE, ENOSPC).
"""

from __future__ import annotations

import errno
import os

from pirsyncd.source.fanotify import (
    FAN_MARK_ADD,
    FAN_MARK_FILESYSTEM,
    FAN_RENAME,
    WATCH_MASK,
    Fanotify,
    name_to_handle_at,
    open_by_handle_at,
)
from pirsyncd.source.mounts import MOUNTINFO, Mount, mount_of, parse_mountinfo

_GROUP_REFUSALS = {
    errno.ENOSYS: "the kernel has no fanotify (CONFIG_FANOTIFY)",
    errno.EINVAL: "the kernel is too old for fanotify with file handles and names (Linux 5.9 or later needed)",
    errno.EPERM: ("fanotify_init was refused: a seccomp filter forbids it (under systemd, SystemCallFilter=: "
                  "see the fanotify drop-in example), or the kernel (before Linux 5.13) wants CAP_SYS_ADMIN"),
    errno.EMFILE: "too many fanotify groups (fs.fanotify.max_user_groups)",
}


def filesystem_marks_refusal(source: str) -> str | None:
    """None when a fanotify filesystem mark can watch ``source`` and its directory handles can
    be made into paths; otherwise why not, as one line naming the cause, such as
    ``/srv/www is on overlay (mounted at /srv), which cannot report file handles to fanotify
    (...)``."""
    try:
        group = Fanotify()
    except OSError as error:
        return _GROUP_REFUSALS.get(error.errno or 0, f"fanotify_init: {error.strerror}")
    with group:
        try:
            group.mark(source)
        except OSError as error:
            return _mark_refusal(group, source, error)
    try:
        handle_type, handle, _ = name_to_handle_at(source)
        mount_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        return f"{source}: cannot find its file handle: {error.strerror}"
    try:
        os.close(open_by_handle_at(mount_fd, handle_type, handle))
    except OSError as error:
        if error.errno == errno.EPERM:
            return "making file handles into paths needs CAP_DAC_READ_SEARCH"
        return f"{source}: cannot open it by its file handle: {error.strerror}"
    finally:
        os.close(mount_fd)
    return None


def _mark_refusal(group: Fanotify, source: str, error: OSError) -> str:
    """Why the filesystem mark on ``source`` was refused, from the kernel's errno."""
    code = error.errno
    if code == errno.EPERM:
        return "a fanotify filesystem mark needs CAP_SYS_ADMIN"
    if code in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
        return f"{source}: cannot mark it: {os.strerror(code)}"
    mount = _mount_now(source)
    where = f"{source} is on {mount.fstype} (mounted at {mount.mount_point})" if mount else f"{source}"
    if code == errno.EOPNOTSUPP:
        return (f"{where}, which cannot report file handles to fanotify"
                " (overlayfs does so only with index=on,nfs_export=on)")
    if code == errno.ENODEV:
        return f"{where}, which has no file system id for fanotify (FUSE and the like)"
    if code == errno.EXDEV:
        return (f"{where}, inside a btrfs subvolume: a filesystem mark covers only a file system's top"
                " subvolume (Linux 6.8 and later refuse it)")
    if code == errno.ENOSPC:
        return "too many fanotify marks (fs.fanotify.max_user_marks)"
    if code == errno.EINVAL:
        try:
            group.mark(source, WATCH_MASK & ~FAN_RENAME, FAN_MARK_ADD | FAN_MARK_FILESYSTEM)
        except OSError:
            return f"{where}: fanotify_mark refused the filesystem mark (EINVAL)"
        return "the kernel has no FAN_RENAME (Linux 5.17, 5.15.154 or 5.10.220 needed)"
    return f"{where}: fanotify_mark: {os.strerror(code or 0)}"


def _mount_now(source: str) -> Mount | None:
    """The mount ``source`` lies on by the mount table now; None when it cannot be read."""
    try:
        with open(MOUNTINFO, "rb") as mountinfo:
            return mount_of(os.path.realpath(source), parse_mountinfo(mountinfo.read().decode("latin-1")))
    except OSError:
        return None
