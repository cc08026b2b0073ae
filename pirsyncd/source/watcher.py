"""Recursive inotify watches on the source tree: the only user of inotify_simple."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os

try:
    import inotify_simple
except ModuleNotFoundError:  # the Debian package carries its own copy
    from pirsyncd._vendor import inotify_simple  # type: ignore[no-redef,import-not-found,unused-ignore]

from pirsyncd.config.filters import Excluder
from pirsyncd.source import dirfd
from pirsyncd.source.events import (
    IN_DONT_FOLLOW,
    WATCH_MASK,
    Change,
    ChangeKind,
    Event,
    EventTranslator,
    WatchedDir,
    WatchTree,
    join,
)
from pirsyncd.source.mounts import MountsBelow, MountTable
from pirsyncd.source.walks import MAX_OPEN_LEVELS, STEP_SECONDS, Walks, leaf_device

INotify = inotify_simple.INotify
# inotify_simple finds libc with ctypes.util.find_library("c") on first use, which runs
# /sbin/ldconfig -p as a child (about 17 ms at start); the running program's own symbols
# include libc's inotify_* already.
if getattr(inotify_simple, "_libc", "absent") is None:
    inotify_simple._libc = ctypes.CDLL(None, use_errno=True)

log = logging.getLogger("pirsyncd")
# A directory is watched through /proc/self/fd/N of a descriptor opened without following
# symlinks: that magic link must be followed to reach it.
WATCH_BY_DESCRIPTOR_MASK = WATCH_MASK & ~IN_DONT_FOLLOW


class WatchLimitReached(Exception):
    """fs.inotify.max_user_watches is exhausted."""


# How long a read waits for the MOVED_TO of a MOVED_FROM it holds, once an immediate look found
# none (milliseconds; a real move out of the source costs the loop this much).
MOVED_TO_WAIT_MS = 50


class Watcher:
    """Watches every directory below ``source`` that is not excluded.

    ``read_changes()`` drains the inotify queue and returns Changes; new directories
    are watched and listed right away, so nothing created before their watch existed is
    missed (the batch sends new directories whole). What lies below them is watched by
    walks in bounded steps (:mod:`pirsyncd.source.walks`): one at the end of each read,
    the rest by :meth:`walk_step` while :attr:`walking`.
    """

    def __init__(self, source: str, excluder: Excluder, debug_events: bool = False,
                 one_file_system: bool = False) -> None:
        self.source = source
        self.excluder = excluder
        self.debug_events = debug_events
        self.inotify = INotify(nonblocking=True)
        self.mount_table = MountTable()
        self.mounts = MountsBelow(source, one_file_system)
        self.tree = WatchTree()
        self.translator = EventTranslator(self.tree)
        self.unwatched: set[str] = set()  # directories we could not watch
        self.unresolved: set[str] = set()  # new directories gone before we could watch them
        self.limit_reached = False
        # The source's device when its file system counts subdirectories in a directory's link
        # count (st_nlink == 2: no subdirectories), checked at the root; None: scan every directory.
        self.leaf_device: int | None = None
        self.walks = Walks(self)
        # The budget of the walk step at the end of each read (tests make it small).
        self.step_directories: int | None = None
        self.step_seconds: float | None = STEP_SECONDS

    def fileno(self) -> int:
        return self.inotify.fileno()

    def close(self) -> None:
        self.walks.close()
        self.inotify.close()
        self.mount_table.close()

    @property
    def watched_count(self) -> int:
        return len(self.tree)

    @property
    def root_alive(self) -> bool:
        return self.tree.root is not None and self.tree.root.wd in self.tree.by_wd

    @property
    def walking(self) -> bool:
        """Some directories below watched ones are still to be walked (and watched)."""
        return bool(self.walks)

    def walk_step(self, max_directories: int | None = None, seconds: float | None = STEP_SECONDS) -> bool:
        """Walk on for at most ``max_directories`` directories or ``seconds`` (None: no such
        bound); return whether walks are left."""
        return self.walks.step(max_directories, seconds)

    def watch_root(self, walk_all: bool = True) -> None:
        """Watch the source root, and everything below it at once or (``walk_all=False``) by
        :meth:`walk_step`. Raises OSError for the root."""
        self.walks.close()
        self.tree = WatchTree()
        self.translator = EventTranslator(self.tree)
        self.unwatched.clear()
        self.unresolved.clear()
        self.limit_reached = False
        self.leaf_device = None
        wd = self.inotify.add_watch(self.source, WATCH_MASK)
        root_fd = dirfd.open_root(self.source)
        try:
            status = os.fstat(root_fd)
            self.mounts.root_device = status.st_dev
            self.mounts.note(self.mount_table.read())
            root = self.tree.add(wd, "", status.st_ino)
            subdirectories = self.subdirectories(root_fd, "")
            if subdirectories is not None:
                self.leaf_device = leaf_device(status, len(subdirectories))
        except BaseException:
            os.close(root_fd)
            raise
        self.walks.begin(root, root_fd, subdirectories)
        if walk_all:
            self.walks.finish()

    def _absolute(self, relative: str) -> str:
        return join(self.source, relative) if relative else self.source

    def subdirectories(self, directory_fd: int, relative: str) -> list[str] | None:
        """The names of the subdirectories (never symlinks) of an open, watched directory;
        [] for a leaf told by its link count (a stat costs a fraction of a listing); None when
        unreadable."""
        if relative and self.leaf_device is not None:
            status = os.fstat(directory_fd)
            if status.st_nlink == 2 and status.st_dev == self.leaf_device:
                return []  # watched already, so a subdirectory made after this look has its event
        try:
            with os.scandir(directory_fd) as listing:
                return [entry.name for entry in listing if entry.is_dir(follow_symlinks=False)]
        except OSError as error:
            if error.errno not in dirfd.GONE_ERRNOS:
                self._note_unwatched(relative, error)
            return None

    def open_subdirectory(self, parent_fd: int, name: str, relative: str) -> int | None:
        """Open a subdirectory without following a symlink; None when it is gone, no longer a
        directory (its event follows) or cannot be opened (noted as unwatched)."""
        try:
            return dirfd.open_child(parent_fd, name)
        except OSError as error:
            if error.errno not in dirfd.GONE_ERRNOS:
                self._note_unwatched(relative, error)
            return None

    def watch_open_directory(self, directory_fd: int, status: os.stat_result, parent: WatchedDir | None,
                              name: str, relative: str) -> WatchedDir | None:
        """Put a kernel watch on the open directory and enter it into the tree at ``relative``
        (under ``parent`` when known); None when it cannot be watched or placed, or stays out
        of the mirror (a file system kept out: see :mod:`pirsyncd.source.mounts`). ``status``: its fstat."""
        if self.mounts.kept_out_reason(status.st_dev) is not None:
            return None
        try:
            wd = int(self.inotify.add_watch(dirfd.proc_path(directory_fd), WATCH_BY_DESCRIPTOR_MASK))
        except OSError as error:
            if error.errno not in dirfd.GONE_ERRNOS:
                self._note_unwatched(relative, error)
            return None
        known = self.tree.by_wd.get(wd)
        if known is None and parent is not None:
            self.unwatched.discard(relative)
            return self.tree.add_child(parent, name, wd, status.st_ino)
        if known is not None:
            # The kernel hands back the watch it has for this directory: moved here from the
            # path the tree still has (its rename's events are queued), or one directory at
            # two real paths (a bind mount inside the source; events name only the first, so
            # the second is covered by full syncs). The file system tells which.
            known_path = self.tree.path_of(known)
            elsewhere = known_path != relative and (
                known.parent is None or dirfd.is_directory_at(self.source, known_path, status))
            if elsewhere:
                twin = OSError(errno.EEXIST, f"it is the directory at {known_path or '.'!r} too")
                self._note_unwatched(relative, twin)
                return None
        return self._register(wd, relative, status.st_ino)

    # -- file systems mounted inside the source ----------------------------------------------
    def kept_out(self) -> list[str]:
        """The mount points below the source whose contents stay out of the mirror."""
        return self.mounts.kept_out()

    def read_mount_changes(self) -> list[Change]:
        """After the mount table changed: watch each place below the source where a file system
        was mounted or unmounted afresh and send it whole (kept out: as an empty directory)."""
        changes = []
        self.walks.tree_moved()
        for path in self.mounts.note(self.mount_table.read()):
            parent = self.tree.find(path.rpartition("/")[0])
            if parent is None or (self.excluder and self.excluder.excludes(path, True)):
                continue  # below a directory not watched: out of the mirror, or covered by full syncs
            mount = self.mounts.at(path)
            reason = self.mounts.kept_out_reason(mount.device) if mount else None
            log.info("%s %s: it is sent again%s", f"a {mount.fstype} file system was mounted at" if mount
                     else "a file system was unmounted at", path,
                     f" as an empty directory ({reason})" if reason else "")
            node = self.tree.find(path)
            if node is not None:
                for wd in self.tree.detach(node):
                    with contextlib.suppress(OSError):  # gone with an unmounted file system
                        self.inotify.rm_watch(wd)
            if self._watch_directory(path) or os.path.lexists(self._absolute(path)):
                changes.append(Change(ChangeKind.NEW_DIR, path, True))
            else:
                changes.append(Change(ChangeKind.REMOVED, path, True))
        return changes

    def _watch_directory(self, relative: str) -> bool:
        """Watch the directory at ``relative`` (its parent is watched) and begin a walk of what
        is below it; False when it is gone, no longer a directory or cannot be watched. A mount
        point kept out of the mirror is not watched, and is there: True."""
        try:
            directory_fd = dirfd.open_relative(self.source, relative)
        except OSError as error:
            if error.errno not in dirfd.GONE_ERRNOS:
                self._note_unwatched(relative, error)
            return False
        try:
            status = os.fstat(directory_fd)
            if self.mounts.kept_out_reason(status.st_dev) is not None:
                os.close(directory_fd)
                return True
            node = self.watch_open_directory(directory_fd, status, None, relative.rpartition("/")[2], relative)
            subdirectories = None if node is None else self.subdirectories(directory_fd, relative)
        except BaseException:
            os.close(directory_fd)
            raise
        if node is None:
            os.close(directory_fd)
            return False
        self.walks.begin(node, directory_fd, subdirectories)
        return True

    def _register(self, wd: int, relative: str, ino: int) -> WatchedDir | None:
        """Enter a kernel watch into the tree at ``relative``, moving a stale entry of it."""
        stale = self.tree.by_wd.get(wd)
        if stale is not None and self.tree.path_of(stale) != relative:
            self.tree.detach(stale)  # the same directory, no longer at its old path
        try:
            node = self.tree.add(wd, relative, ino)
        except KeyError:
            return None  # its parent was dropped meanwhile
        self.unwatched.discard(relative)
        return node

    def retry_unwatched(self, only: set[str] | None = None) -> list[str]:
        """Try again to watch what could not be watched (the limit may have been raised, a
        directory made readable), all or ``only`` those; return the directories now watched."""
        watched = []
        for relative in sorted(self.unwatched if only is None else self.unwatched & only):
            if relative == "" or self.tree.find(relative) is not None:
                continue
            parent = self.tree.find(relative.rpartition("/")[0])
            if parent is not None and self._watch_directory(relative):
                watched.append(relative)
        if not self.unwatched:
            self.limit_reached = False
        return watched

    def _note_unwatched(self, relative: str, error: OSError) -> None:
        if relative not in self.unwatched:
            self.unwatched.add(relative)
            if error.errno == errno.ENOSPC:
                self.limit_reached = True
            else:
                log.error("cannot watch %r: %s; it is covered by full syncs only", relative or ".",
                          error.strerror)

    def read_changes(self) -> list[Change]:
        """Read every queued event and turn it into Changes (never blocks)."""
        events = [Event(*event) for event in self.inotify.read(timeout=0)]
        if not events:
            return []
        result: list[Change] = []
        for event in events:
            self._handle(self.translator.feed((event,)), result)
        if self.translator.unpaired_moves:
            # A MOVED_TO may still be on its way: look once more before calling it a move out,
            # and if none came, wait a moment for it. The kernel queues the two halves of a
            # rename one after the other, and the renaming process may be preempted between
            # them (seen on a loaded machine): a rename told as a move out and a move in
            # would send the renamed tree again in full.
            for timeout in (0, MOVED_TO_WAIT_MS):
                more = [Event(*event) for event in self.inotify.read(timeout=timeout)]
                events += more
                for event in more:
                    self._handle(self.translator.feed((event,)), result)
                if not self.translator.unpaired_moves:
                    break
            self._handle([self._moved_out(change) for change in self.translator.finish_unpaired()], result)
        if self.debug_events:
            for event in events:
                log.debug("inotify event wd=%d mask=%#x cookie=%d name=%r", *event)
        if self.walks:
            # The new directories of this read are walked first (a small one is done in this
            # step); the descriptors the walks keep open stay bounded.
            self.walks.step(self.step_directories, self.step_seconds)
            self.walks.step(seconds=None, max_levels=MAX_OPEN_LEVELS)
        return result

    def _moved_out(self, change: Change) -> Change:
        """A directory moved out of the tree, told after what came later (its MOVED_TO was
        waited for): its path is handled as a lost watch's, so that a directory there again
        (the same one moved back, or another) is watched and sent whole instead."""
        if not change.is_dir or (self.excluder and self.excluder.excludes(change.path, True)):
            return change
        return Change(ChangeKind.LOST_WATCH, change.path, True)

    def _handle(self, changes: list[Change], result: list[Change]) -> None:
        """Act on changes in kernel order, so each one meets the tree as it was then."""
        self.walks.tree_moved()
        for wd in self.translator.watches_to_remove:
            with contextlib.suppress(OSError):  # already gone with its directory
                self.inotify.rm_watch(wd)
        self.translator.watches_to_remove.clear()
        for change in changes:
            if change.kind == ChangeKind.LOST_WATCH:
                # The watch vanished while the directory may still exist (e.g. an unmount below
                # the root), or a directory moved out may be back: watch what is there and send
                # it whole.
                if self._watch_directory(change.path):
                    change = Change(ChangeKind.NEW_DIR, change.path, True)
                else:
                    change = Change(ChangeKind.REMOVED, change.path, True)
            elif change.kind == ChangeKind.NEW_DIR:
                self._watch_new_directory(change.path)
            elif change.kind == ChangeKind.MOVED and change.is_dir:
                self._follow_unresolved(change.old_path, change.path)
            elif change.kind == ChangeKind.REMOVED and change.is_dir:
                self._follow_unresolved(change.path, None)
            result.append(change)

    def _watch_new_directory(self, path: str) -> None:
        if self.excluder and self.excluder.excludes(path, True):
            return
        if self._watch_directory(path):
            return
        if not os.path.lexists(self._absolute(path)) and len(self.unresolved) < 10000:
            # Gone already: renamed (with an ancestor, or itself) by an event still queued,
            # or deleted. Keep its name to follow that event.
            self.unresolved.add(path)

    def _follow_unresolved(self, old_path: str, new_path: str | None) -> None:
        """A directory moved or vanished: new directories not yet watched below it move too."""
        if not self.unresolved:
            return
        prefix = old_path + "/"
        for path in [p for p in self.unresolved if p == old_path or p.startswith(prefix)]:
            self.unresolved.discard(path)
            if new_path is not None:
                self._watch_new_directory(new_path + path[len(old_path):])

