"""Directory file handles (as fanotify reports them) made into paths, cached by handle.

A handle is opened with ``open_by_handle_at(mount_fd, handle, O_PATH)`` and the path read
back from ``/proc/self/fd/N``: a directory renamed since the event resolves to where it is
now; one deleted gives ESTALE, or a path ending in `` (deleted)`` while something still holds
it open. Both are reported as :class:`Gone`. Needs CAP_DAC_READ_SEARCH; ``mount_fd`` is a
real (``O_RDONLY``) descriptor of a directory on the marked file system.

The cache keeps each handle's answer until :meth:`HandleResolver.forget_below` is told that a
directory was renamed or deleted: the caller reads events in kernel order, so an event queued
before a rename meets the path the directory had then, if it was resolved then.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from pirsyncd.source.fanotify import open_by_handle_at
from pirsyncd.source.fanotify_events import FileHandle

DELETED_SUFFIX = " (deleted)"
# The kernel's answers for a handle whose object no longer exists.
STALE_ERRNOS = frozenset({errno.ESTALE, errno.ENOENT})
# Past this many answers the cache starts afresh (a handle's answer is cheap to find again).
CACHE_LIMIT = 100_000


class Gone(NamedTuple):
    """A handle whose directory no longer exists: ``reason`` is "stale" (ESTALE: the handle
    names nothing now) or "deleted" (still held open somewhere); ``last_path`` the path it had,
    where the kernel still knows it."""

    reason: str
    last_path: str = ""


class HandleResolver:
    """Paths of directory handles on one file system, cached by handle."""

    def __init__(self, mount_path: str) -> None:
        self.mount_fd = os.open(mount_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.cache: dict[FileHandle, str | Gone] = {}
        self.lookups = 0  # resolutions through the kernel (cache misses)

    def close(self) -> None:
        if self.mount_fd >= 0:
            os.close(self.mount_fd)
            self.mount_fd = -1

    def resolve(self, handle: FileHandle) -> str | Gone:
        """The absolute path of the directory ``handle`` names, or :class:`Gone`. Other errors
        (EPERM: no CAP_DAC_READ_SEARCH) are raised."""
        known = self.cache.get(handle)
        if known is not None:
            return known
        found = self._lookup(handle)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        self.cache[handle] = found
        return found

    def _lookup(self, handle: FileHandle) -> str | Gone:
        self.lookups += 1
        try:
            descriptor = open_by_handle_at(self.mount_fd, handle.handle_type, handle.handle)
        except OSError as error:
            if error.errno in STALE_ERRNOS:
                return Gone("stale")
            raise
        try:
            path = os.readlink(f"/proc/self/fd/{descriptor}")
            # A directory may be called "x (deleted)": only one with no links left is gone.
            if path.endswith(DELETED_SUFFIX) and os.fstat(descriptor).st_nlink == 0:
                return Gone("deleted", path.removesuffix(DELETED_SUFFIX))
        finally:
            os.close(descriptor)
        return path

    def forget_below(self, path: str) -> None:
        """Drop the cached answers for ``path`` and every directory below it (it was renamed or
        deleted: they are elsewhere now, or gone)."""
        prefix = path.rstrip("/") + "/"
        stale = [handle for handle, known in self.cache.items()
                 if isinstance(known, str) and (known == path or known.startswith(prefix))]
        for handle in stale:
            del self.cache[handle]
