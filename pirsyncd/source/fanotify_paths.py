"""Directory file handles (as fanotify reports them) made into paths, cached by handle.

:class:`KernelLookup` asks the kernel: a handle is opened with ``open_by_handle_at(mount_fd,
handle, O_PATH)`` and the path read back from ``/proc/self/fd/N``. A directory renamed since
the event resolves to where it is now; one deleted gives ESTALE, or a path ending in
`` (deleted)`` while something still holds it open. Both are reported as :class:`Gone`. A
directory the mount of ``mount_fd`` does not reach (the source a bind mount of a subdirectory:
the mark covers the whole file system) reads back as ``/``: it is told from the real root by
its inode and reported as :class:`Gone` "unreachable" (outside the source). Needs
CAP_DAC_READ_SEARCH; ``mount_fd`` is a real (``O_RDONLY``) descriptor of a directory on the
marked file system.

:class:`HandleResolver` caches a lookup's answers by handle until :meth:`HandleResolver.forget_below`
is told that a directory was renamed or deleted: the caller reads events in kernel order, so
an event queued before a rename meets the path the directory had then, if it was resolved
then. It takes any lookup (a dict's ``get`` in the unit tests).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from pirsyncd.source.fanotify import open_by_handle_at
from pirsyncd.source.fanotify_events import UNREACHABLE, UNRESOLVABLE, FileHandle, Gone

DELETED_SUFFIX = " (deleted)"
# The kernel's answers for a handle whose object no longer exists.
STALE_ERRNOS = frozenset({errno.ESTALE, errno.ENOENT})
# What a capability problem looks like: a bug of the caller (the probe checks first), raised.
RAISED_ERRNOS = frozenset({errno.EPERM, errno.EBADF})
# ENOMEM is how the kernel passes on a failed reconnection of a directory to its parents, seen
# under churn (a directory deleted or moved meanwhile): tried again this often before giving up.
ATTEMPTS = 3
# Past this many answers the cache starts afresh (a handle's answer is cheap to find again).
CACHE_LIMIT = 100_000


class KernelLookup:
    """Where a directory handle of one file system is now, by asking the kernel; a callable.

    Its ``mount_fd`` (``mount_path`` opened; OSError at once when it cannot be) is held only
    while lookups go on: :meth:`release` lets it go (after each read of the queue), since an
    open descriptor keeps the file system busy and an operator's ``umount`` of the source would
    fail with EBUSY; the next lookup opens ``mount_path`` again."""

    def __init__(self, mount_path: str) -> None:
        self.mount_path = mount_path
        self.mount_fd = os.open(mount_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        root = os.stat("/")
        self.root = (root.st_dev, root.st_ino)  # what a path of "/" must be, to be the root

    def release(self) -> None:
        """Close the descriptor until the next lookup."""
        if self.mount_fd >= 0:
            os.close(self.mount_fd)
            self.mount_fd = -1

    def close(self) -> None:
        self.release()

    def __call__(self, handle: FileHandle) -> str | Gone:
        """The absolute path of the directory ``handle`` names, or :class:`Gone`: "stale",
        "deleted", "unreachable" (beyond the mount of ``mount_path``), or (with the errno's name
        as ``last_path``) "unresolvable" when the kernel kept failing otherwise. EPERM (no
        CAP_DAC_READ_SEARCH) is raised."""
        if self.mount_fd < 0:
            try:
                self.mount_fd = os.open(self.mount_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as error:  # the source is gone or covered: its own events say so
                return Gone(UNRESOLVABLE, errno.errorcode.get(error.errno or 0, str(error.errno)))
        for attempt in range(ATTEMPTS):
            try:
                descriptor = open_by_handle_at(self.mount_fd, handle.handle_type, handle.handle)
                break
            except OSError as error:
                if error.errno in STALE_ERRNOS:
                    return Gone("stale")
                if error.errno in RAISED_ERRNOS:
                    raise
                if attempt == ATTEMPTS - 1:
                    return Gone(UNRESOLVABLE, errno.errorcode.get(error.errno or 0, str(error.errno)))
        try:
            path = os.readlink(f"/proc/self/fd/{descriptor}")
            # A directory may be called "x (deleted)": only one with no links left is gone.
            if path.endswith(DELETED_SUFFIX) and os.fstat(descriptor).st_nlink == 0:
                return Gone("deleted", path.removesuffix(DELETED_SUFFIX))
            if path == "/":
                opened = os.fstat(descriptor)
                if (opened.st_dev, opened.st_ino) != self.root:
                    return Gone(UNREACHABLE)  # the kernel's answer for a directory the mount does not reach
        finally:
            os.close(descriptor)
        return path


def is_dir_on_disk(path: str) -> bool | None:
    """Whether ``path`` is a directory now (True), another kind of object (False), or absent
    (None), not following a symlink at its end."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None


class HandleResolver:
    """Paths of directory handles, cached by handle (``lookup`` answers the misses).

    The answers are also kept as a tree of paths (each cached path linked from its parent
    path, up to ``/``), so that forgetting what lies below a renamed or deleted directory costs
    the size of that subtree, and asking whether anything below a path was answered costs a
    lookup: never a scan of the whole cache per event. (The mark sees the whole file system,
    so an ``rm -rf`` of a large tree anywhere on it is a deletion event per directory.)

    >>> resolver = HandleResolver({1: "/srv/www/a", 2: "/srv/www/a/b", 3: "/srv/www/ab"}.get)
    >>> [resolver.resolve(handle) for handle in (1, 2, 3)]
    ['/srv/www/a', '/srv/www/a/b', '/srv/www/ab']
    >>> resolver.answered_below("/srv/www/a"), resolver.answered_below("/srv/www/a/c")
    (True, False)
    >>> resolver.forget_below("/srv/www/a")
    >>> sorted(resolver.cache.values()), resolver.answered_below("/srv/www/a"), resolver.answered_below("/srv")
    (['/srv/www/ab'], False, True)
    """

    def __init__(self, lookup: Callable[[FileHandle], str | Gone]) -> None:
        self.lookup = lookup
        self.cache: dict[FileHandle, str | Gone] = {}
        self.lookups = 0  # answers asked of the lookup (cache misses)
        self._handles_at: dict[str, set[FileHandle]] = {}  # a cached path: the handles answered with it
        # A path with cached answers at or below it: those of its children that have some. Every
        # path here or in _handles_at (but "/") is among its parent's children.
        self._children: dict[str, set[str]] = {}

    def resolve(self, handle: FileHandle) -> str | Gone:
        """The absolute path of the directory ``handle`` names, or :class:`Gone`."""
        known = self.cache.get(handle)
        if known is not None:
            return known
        self.lookups += 1
        found = self.lookup(handle)
        if isinstance(found, Gone) and found.reason in (UNRESOLVABLE, UNREACHABLE):
            # Not cached: the next event may find it. An unreachable directory may be moved
            # to where the source's mount reaches it, through another mount of the file
            # system, and no event there names its handle for forget_below to drop it.
            return found
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
            self._handles_at.clear()
            self._children.clear()
        self.cache[handle] = found
        if isinstance(found, str):
            self._add_path(found, handle)
        return found

    def _add_path(self, path: str, handle: FileHandle) -> None:
        self._handles_at.setdefault(path, set()).add(handle)
        node = path
        while node != "/":
            parent = os.path.dirname(node)
            siblings = self._children.setdefault(parent, set())
            if node in siblings:
                break  # linked already, and so are its parents
            siblings.add(node)
            node = parent

    def answered_below(self, path: str) -> bool:
        """Whether a cached answer is ``path`` or lies below it."""
        path = _normal(path)
        return path in self._handles_at or path in self._children

    def forget_below(self, path: str) -> None:
        """Drop the cached answers for ``path`` and every directory below it (it was renamed or
        deleted: they are elsewhere now, or gone)."""
        path = _normal(path)
        if not self.answered_below(path):
            return
        pending = [path]
        while pending:
            node = pending.pop()
            for handle in self._handles_at.pop(node, ()):
                del self.cache[handle]
            pending += self._children.pop(node, ())
        node = path
        while node != "/":  # unlink it, and each parent left with nothing below it
            parent = os.path.dirname(node)
            siblings = self._children.get(parent)
            if siblings is None:
                break
            siblings.discard(node)
            if siblings or parent in self._handles_at:
                break
            del self._children[parent]
            node = parent


def _normal(path: str) -> str:
    """``path`` without a trailing slash (``/`` stays).

    >>> _normal("/srv/www/"), _normal("/")
    ('/srv/www', '/')
    """
    return path.rstrip("/") or "/"
