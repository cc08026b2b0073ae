"""Recursive inotify watches on the source tree: the only user of inotify_simple."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import time

try:
    import inotify_simple
except ModuleNotFoundError:  # the Debian package carries its own copy
    from pirsyncd._vendor import inotify_simple  # type: ignore[no-redef,import-not-found,unused-ignore]

from pirsyncd.events import WATCH_MASK, Change, ChangeKind, Event, EventTranslator, WatchTree, join
from pirsyncd.filters import Excluder

INotify = inotify_simple.INotify
# inotify_simple finds libc with ctypes.util.find_library("c") on first use, which runs
# /sbin/ldconfig -p as a child (about 17 ms at start); the running program's own symbols
# include libc's inotify_* already.
if getattr(inotify_simple, "_libc", "absent") is None:
    inotify_simple._libc = ctypes.CDLL(None, use_errno=True)

log = logging.getLogger("pirsyncd")


class WatchLimitReached(Exception):
    """fs.inotify.max_user_watches is exhausted."""


class Watcher:
    """Watches every directory below ``source`` that is not excluded.

    ``read_changes()`` drains the inotify queue and returns Changes; new directories
    are watched and scanned for subdirectories right away, so nothing created before
    their watch existed is missed (the batch sends new directories whole).
    """

    def __init__(self, source: str, excluder: Excluder, debug_events: bool = False) -> None:
        self.source = source
        self.excluder = excluder
        self.debug_events = debug_events
        self.inotify = INotify(nonblocking=True)
        self.tree = WatchTree()
        self.translator = EventTranslator(self.tree)
        self.unwatched: set[str] = set()  # directories we could not watch
        self.unresolved: set[str] = set()  # new directories gone before we could watch them
        self.limit_reached = False
        # The source's device when its file system counts subdirectories in a directory's link
        # count (st_nlink == 2: no subdirectories), checked at the root; None: scan every directory.
        self.leaf_device: int | None = None

    def fileno(self) -> int:
        return self.inotify.fileno()

    def close(self) -> None:
        self.inotify.close()

    @property
    def watched_count(self) -> int:
        return len(self.tree)

    @property
    def root_alive(self) -> bool:
        return self.tree.root is not None and self.tree.root.wd in self.tree.by_wd

    def watch_root(self) -> None:
        """Watch the source root and everything below it. Raises OSError for the root."""
        self.tree = WatchTree()
        self.translator = EventTranslator(self.tree)
        self.unwatched.clear()
        self.unresolved.clear()
        self.limit_reached = False
        self.leaf_device = None
        wd = self.inotify.add_watch(self.source, WATCH_MASK)
        self.tree.add(wd, "", os.stat(self.source).st_ino)
        self._watch_below("")

    def _absolute(self, relative: str) -> str:
        return join(self.source, relative) if relative else self.source

    def _watch_below(self, relative: str) -> None:
        """Watch every directory below an already watched one (iterative, depth first)."""
        start = self.tree.find(relative)
        if start is None:
            return
        stack = [(relative, start)]
        excluder, by_wd = self.excluder, self.tree.by_wd
        while stack:
            parent, node = stack.pop()
            absolute = self._absolute(parent)
            if parent and self.leaf_device is not None and _is_leaf(absolute, self.leaf_device):
                continue  # watched already, so a subdirectory made after this look has its event
            try:
                with os.scandir(absolute) as listing:
                    subdirectories = [entry for entry in listing if entry.is_dir(follow_symlinks=False)]
            except OSError as error:
                if error.errno not in (errno.ENOENT, errno.ENOTDIR):
                    self._note_unwatched(parent, error)
                continue
            if not parent:
                self.leaf_device = _leaf_device(absolute, len(subdirectories))
            for entry in subdirectories:
                name = entry.name
                path = f"{parent}/{name}" if parent else name
                if excluder and excluder.excludes(path, True):
                    continue
                wd = self._kernel_watch(f"{absolute}/{name}", path)
                if wd is None:
                    continue
                if wd in by_wd:
                    # Seen before (a stale entry, or a directory met twice): take the careful path.
                    if self._register(wd, path, entry.inode()):
                        child = self.tree.find(path)
                        if child is not None:
                            stack.append((path, child))
                    continue
                stack.append((path, self.tree.add_child(node, name, wd, entry.inode())))

    def _kernel_watch(self, absolute: str, relative: str) -> int | None:
        """inotify_add_watch; None when the directory is gone or cannot be watched."""
        try:
            return int(self.inotify.add_watch(absolute, WATCH_MASK))
        except OSError as error:
            if error.errno not in (errno.ENOENT, errno.ENOTDIR):  # gone: its removal is pending
                self._note_unwatched(relative, error)
            return None

    def _add_watch(self, relative: str) -> bool:
        absolute = self._absolute(relative)
        wd = self._kernel_watch(absolute, relative)
        if wd is None:
            return False
        try:
            ino = os.lstat(absolute).st_ino
        except OSError:
            ino = 0  # gone again: its event follows
        return self._register(wd, relative, ino)

    def _register(self, wd: int, relative: str, ino: int) -> bool:
        """Enter a kernel watch into the tree at ``relative``."""
        stale = self.tree.by_wd.get(wd)
        if stale is not None and self.tree.path_of(stale) != relative:
            self.tree.detach(stale)  # the same directory seen again under a new name
        try:
            self.tree.add(wd, relative, ino)
        except KeyError:
            return False  # its parent was dropped meanwhile
        self.unwatched.discard(relative)
        return True

    def retry_unwatched(self, only: set[str] | None = None) -> list[str]:
        """Try again to watch what could not be watched (the limit may have been raised, a
        directory made readable), all or ``only`` those; return the directories now watched."""
        watched = []
        for relative in sorted(self.unwatched if only is None else self.unwatched & only):
            if relative == "" or self.tree.find(relative) is not None:
                continue
            parent = self.tree.find(relative.rpartition("/")[0])
            if parent is not None and self._add_watch(relative):
                self._watch_below(relative)
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
            # A MOVED_TO may still be on its way: look once more before calling it a move out.
            more = [Event(*event) for event in self.inotify.read(timeout=0)]
            events += more
            for event in more:
                self._handle(self.translator.feed((event,)), result)
            self._handle(self.translator.finish_unpaired(), result)
        if self.debug_events:
            for event in events:
                log.debug("inotify event wd=%d mask=%#x cookie=%d name=%r", *event)
        return result

    def _handle(self, changes: list[Change], result: list[Change]) -> None:
        """Act on changes in kernel order, so each one meets the tree as it was then."""
        for wd in self.translator.watches_to_remove:
            with contextlib.suppress(OSError):  # already gone with its directory
                self.inotify.rm_watch(wd)
        self.translator.watches_to_remove.clear()
        for change in changes:
            if change.kind == ChangeKind.LOST_WATCH:
                # The watch vanished while the directory may still exist (e.g. an unmount below
                # the root): watch it again if it is there and send it whole.
                if os.path.isdir(self._absolute(change.path)) and self._add_watch(change.path):
                    self._watch_below(change.path)
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
        if self._add_watch(path):
            self._watch_below(path)
        elif not os.path.lexists(self._absolute(path)) and len(self.unresolved) < 10000:
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

    def limit_message(self, resync_interval: float) -> tuple[str, str]:
        """What to tell a person when fs.inotify.max_user_watches is exhausted: the log
        line (the sysctl and the value to set) and a short status warning."""
        try:
            with open("/proc/sys/fs/inotify/max_user_watches") as stream:
                current = int(stream.read())
        except (OSError, ValueError):
            current = 0
        unwatched, complete = count_directories(self.source, self.unwatched)
        needed = current + unwatched + 1024
        counted = f"{unwatched}" if complete else f"at least {unwatched}"
        message = (f"inotify watch limit reached: fs.inotify.max_user_watches = {current}, {counted} "
                   f"directories are not watched; raise it with: sysctl -w fs.inotify.max_user_watches={needed} "
                   f"(and in /etc/sysctl.d/ to keep it). Until then those directories are mirrored by a full "
                   f"sync every {resync_interval:g} s")
        return message, f"{unwatched} directories unwatched (raise fs.inotify.max_user_watches)"


def _leaf_device(root: str, subdirectories: int) -> int | None:
    """The root's device when its link count is 2 + its subdirectories (ext4, xfs, tmpfs do
    that; btrfs and others say 1), so that a directory with 2 links has none; else None.
    A root without subdirectories proves nothing."""
    try:
        status = os.lstat(root)
    except OSError:
        return None
    return status.st_dev if subdirectories and status.st_nlink == subdirectories + 2 else None


def _is_leaf(absolute: str, device: int) -> bool:
    """True when a watched directory has no subdirectories, told by its link count: a stat
    costs a fraction of listing it. Another device (a mount below the source) is listed."""
    try:
        status = os.lstat(absolute)
    except OSError:
        return False  # let the listing say what happened
    return status.st_nlink == 2 and status.st_dev == device


def count_directories(source: str, roots: set[str], budget: float = 0.2) -> tuple[int, bool]:
    """How many directories lie at and below the given relative roots, and whether that
    is all of them: the count stops after ``budget`` seconds, so the loop never waits long."""
    total = 0
    deadline = time.monotonic() + budget
    for root in roots:
        stack = [os.path.join(source, root) if root else source]
        while stack:
            if total % 256 == 0 and time.monotonic() > deadline:
                return total, False
            path = stack.pop()
            total += 1
            try:
                with os.scandir(path) as entries:
                    stack.extend(entry.path for entry in entries if entry.is_dir(follow_symlinks=False))
            except OSError:
                continue
    return total, True
