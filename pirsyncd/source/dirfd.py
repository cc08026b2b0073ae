"""Open directories of the source tree by their real path only: every component below the
source is opened relative to its parent with ``O_NOFOLLOW | O_DIRECTORY``, so a directory
that has just been replaced by a symlink (a deploy step: ``cp -r d copy; rm -r copy;
ln -s d copy``) is never walked or watched through.

A kernel call that takes a path (``inotify_add_watch``) is given ``/proc/self/fd/N`` for such a
descriptor: the magic link leads to exactly the directory that was opened.
"""

from __future__ import annotations

import errno
import os

# A component that is gone, or is no longer a directory (a file, a symlink): an event for it is
# on its way, so the caller treats it as gone rather than as an error.
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
_STEP_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_root(source: str) -> int:
    """A listable descriptor of the source itself (its own path may hold symlinks: the
    user's choice, checked by the source's identity)."""
    return os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_child(parent_fd: int, name: str) -> int:
    """A listable descriptor of directory ``name`` in the directory ``parent_fd``; OSError
    (errno in GONE_ERRNOS) when it is gone or not a directory, a symlink included."""
    return os.open(name, _LIST_FLAGS, dir_fd=parent_fd)


def open_relative(source: str, relative: str) -> int:
    """A listable descriptor of ``source/relative``, opened one component at a time without
    following a symlink below the source ('' is the source itself).

    >>> import tempfile; root = tempfile.mkdtemp(); os.makedirs(f"{root}/real/inner")
    >>> os.symlink("real", f"{root}/alias")
    >>> os.close(open_relative(root, "real/inner"))
    >>> open_relative(root, "alias/inner")
    Traceback (most recent call last):
    NotADirectoryError: [Errno 20] Not a directory: 'alias'
    """
    if not relative:
        return open_root(source)
    *parents, last = relative.split("/")
    current = os.open(source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parents:
            step = os.open(name, _STEP_FLAGS, dir_fd=current)
            os.close(current)
            current = step
        return open_child(current, last)
    finally:
        os.close(current)


def is_directory_at(source: str, relative: str, status: os.stat_result) -> bool:
    """Whether ``source/relative``, by its real path, is the directory ``status`` describes."""
    try:
        fd = open_relative(source, relative)
    except OSError:
        return False
    try:
        found = os.fstat(fd)
    finally:
        os.close(fd)
    return (found.st_dev, found.st_ino) == (status.st_dev, status.st_ino)


def proc_path(fd: int) -> str:
    """The path that names an open descriptor's own file for calls that take a path.

    >>> proc_path(7)
    '/proc/self/fd/7'
    """
    return f"/proc/self/fd/{fd}"
