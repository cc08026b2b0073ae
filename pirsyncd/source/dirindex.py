"""The directories of a source watched with fanotify, by inode: what the inotify watcher's tree
of watched directories is to the warm restart (:mod:`pirsyncd.restart`), with no watch.

A fanotify filesystem mark needs no directory listed, so nothing else knows where each
directory is; the restart state's index (inode -> parent's inode, name) is made from this
one. It is a :class:`~pirsyncd.source.events.WatchTree` whose nodes carry the directory's inode
number as their ``wd`` too, so one inode has one place in it. It is built by a scan of the
directories in bounded steps (:class:`~pirsyncd.source.walks.Walks`, as the inotify watch walk,
through descriptors, never following a symlink), and kept current from the Changes the
fanotify watcher reads, in kernel order:

    NEW_DIR p ───────────────> what the index had at p dropped, p scanned anew (a step later)
    REMOVED p ───────────────> dropped with what is below it
    MOVED old -> new (a dir) ─> the node moved, if the disk agrees (new holds that inode, its
                                parent the one the index has there); else old dropped, new scanned
    a file's change where the
      index has a directory ──> that path scanned anew (the directory's removal was told at
                                another path, or merged away)
    RESCAN, ROOT_LOST ───────> unusable (the source side builds a new index with its new watch)

fanotify reports where a directory *is* when its event is read, not where it was when the event
was queued, so an event may meet a tree that a scan has already moved past. Each step above
therefore takes the disk's word over the event's: whatever the index holds was seen on disk
(a scan, or a move checked against it) at or after the event that put it there, and any change
since has an event still queued (a move is checked by inode number, which a directory made
since may have been given again: the deletion that freed it is among those events, and drops
what the move carried). What it cannot place is left out, never guessed: a directory
missing from the index is sent whole by a warm start, one at a wrong place would be renamed at
the destination. Scans run in steps, never inside a read of events, so that the restart
keeper's rule holds: it writes the index only when no scan is left (:attr:`complete`) after
reading every queued event, so every directory the index holds has its changes read.

Left out: excluded directories (as from the watch tree), directories on other file systems
(the mark does not reach them: the watcher lists them as unwatched) and mount points (a bind
mount shows one inode at two places), and what lies below a directory that cannot be listed
(:attr:`unreadable`).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable

from pirsyncd.config.filters import Excluder
from pirsyncd.source import dirfd
from pirsyncd.source.events import Change, ChangeKind, WatchedDir, WatchTree, is_within
from pirsyncd.source.walks import MAX_OPEN_LEVELS, STEP_SECONDS, Walks, leaf_device

# Paths kept in :attr:`DirectoryIndex.unreadable` at most (read at a warm start, where each is sent whole).
UNREADABLE_LIMIT = 10_000
# Scans asked for by events and not done yet, at most: past this (a flood of new directories),
# the index starts over with one scan of the whole tree, which costs less than the queue.
RESCAN_LIMIT = 100_000
_FILE_CHANGES = (ChangeKind.CHANGED, ChangeKind.WRITING, ChangeKind.CLOSED)


class DirectoryIndex:
    """The directories below ``source`` by inode, built by :meth:`begin` and :meth:`step`,
    kept by :meth:`apply`. ``is_mount_point(relative)``: whether a file system is mounted
    there (the mount table's word, kept by the watcher)."""

    def __init__(self, source: str, excluder: Excluder, is_mount_point: Callable[[str], bool] = lambda path: False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.excluder = excluder
        self.is_mount_point = is_mount_point
        self.clock = clock
        self.tree = WatchTree()  # each node's wd is its inode number
        self.walks = Walks(self, clock)
        self.begun = False
        self.unusable: str | None = None  # why the index cannot be trusted any more
        self.unreadable: set[str] = set()  # directories that could not be listed (what is below is left out)
        self.leaf_device: int | None = None  # as the inotify watcher's (see leaf_device)
        self._root_device = 0
        # Entries to scan anew, in the order asked: (parent's inode, name) -> the parent's node.
        # Kept by node, so a rename of a directory above, read later, takes them along.
        self._rescans: dict[tuple[int, str], WatchedDir] = {}
        self._unplaced: list[str] = []  # paths to scan anew whose parent the index lacks (yet)

    # -- state -----------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Built, usable, and no scan left: every directory it holds is where it says (as far
        as the events read so far tell)."""
        return self.begun and self.unusable is None and not self._rescans and not self.walks

    @property
    def working(self) -> bool:
        """Scans are left for :meth:`step`."""
        return self.begun and self.unusable is None and bool(self._rescans or self.walks)

    def close(self) -> None:
        """Give up the scans in progress (their descriptors)."""
        self.walks.close()

    # -- building ----------------------------------------------------------------------------------
    def begin(self) -> None:
        """Enter the source root and begin the scan of what is below it (:meth:`step`); OSError
        when the root cannot be opened."""
        self.walks.close()
        self.tree = WatchTree()
        self._rescans.clear()
        self.unreadable.clear()
        root_fd = dirfd.open_root(self.source)
        try:
            status = os.fstat(root_fd)
            self._root_device = status.st_dev
            root = self.tree.add(status.st_ino, "", status.st_ino)
            subdirectories = self.subdirectories(root_fd, "")
            if subdirectories is not None:
                self.leaf_device = leaf_device(status, len(subdirectories))
        except BaseException:
            os.close(root_fd)
            raise
        self.begun, self.unusable = True, None
        self.walks.begin(root, root_fd, subdirectories)

    def step(self, seconds: float | None = STEP_SECONDS, max_directories: int | None = None) -> bool:
        """Scan for at most ``seconds`` (None: until done) and ``max_directories`` walked: the
        paths to scan anew first, then the walks; return whether work is left."""
        if not self.working:
            return False
        until = None if seconds is None else self.clock() + seconds
        while self._rescans and (until is None or self.clock() < until):
            key = next(iter(self._rescans))
            self._scan_anew(self._rescans.pop(key), key[1])
        left = None if until is None else max(until - self.clock(), 0.0)
        if self.walks and (left is None or left > 0 or not self._rescans):
            self.walks.step(max_directories, seconds=left)
        # Each scan begun holds a descriptor per level of its branch: they stay bounded.
        self.walks.step(seconds=None, max_levels=MAX_OPEN_LEVELS)
        return self.working

    def finish(self) -> None:
        """Begin if need be (anew if given up) and scan everything left, at once."""
        if not self.begun or self.unusable is not None:
            self.begin()
        self.step(seconds=None)

    # -- what a walk needs (pirsyncd.source.walks.WalkSite) -----------------------------------------
    def open_subdirectory(self, parent_fd: int, name: str, relative: str) -> int | None:
        """Open a subdirectory without following a symlink; None when it is gone or not a
        directory (its event follows) or cannot be opened (:attr:`unreadable`)."""
        try:
            return dirfd.open_child(parent_fd, name)
        except OSError as error:
            if error.errno not in dirfd.GONE_ERRNOS:
                self._note_unreadable(relative)
            return None

    def watch_open_directory(self, directory_fd: int, status: os.stat_result, parent: WatchedDir | None,
                             name: str, relative: str) -> WatchedDir | None:
        """Enter the open directory (``status``: its fstat) into the index under ``parent`` as
        ``name`` (no watch: the mark covers it); None when it stays out (another file system, a
        mount point) or has no place (its parent left the index)."""
        if parent is None or status.st_dev != self._root_device or self.is_mount_point(relative):
            return None
        if self.tree.by_wd.get(parent.wd) is not parent:
            return None
        inode = status.st_ino
        elsewhere = self.tree.by_wd.get(inode)
        if elsewhere is not None:
            # Seen here now: the place the index had for it is stale (its event is still queued).
            placed_below_itself = is_within(parent, elsewhere)
            self.tree.detach(elsewhere)
            if placed_below_itself:
                return None  # its new parent was below its old place: left out with it
        self.unreadable.discard(relative)
        return self.tree.add_child(parent, name, inode, inode)

    def subdirectories(self, directory_fd: int, relative: str) -> list[str] | None:
        """The names of the subdirectories (never symlinks) of an open directory; [] for a leaf
        told by its link count; None when it cannot be listed (:attr:`unreadable`)."""
        if relative and self.leaf_device is not None:
            status = os.fstat(directory_fd)
            if status.st_nlink == 2 and status.st_dev == self.leaf_device:
                return []  # a subdirectory made after this look has its event (the mark is placed)
        try:
            with os.scandir(directory_fd) as listing:
                return [entry.name for entry in listing if entry.is_dir(follow_symlinks=False)]
        except OSError as error:
            if error.errno not in dirfd.GONE_ERRNOS:
                self._note_unreadable(relative)
            return None

    def _note_unreadable(self, relative: str) -> None:
        if len(self.unreadable) < UNREADABLE_LIMIT:
            self.unreadable.add(relative)

    # -- keeping it current ------------------------------------------------------------------------
    def apply(self, changes: Iterable[Change]) -> None:
        """Follow the watcher's changes, in the order read (unfiltered: excluded paths are
        left out here)."""
        if not self.begun or self.unusable is not None:
            return
        self._follow(changes)
        # A path whose parent the index lacked may have one now: a rename of a directory
        # above it (resolved late, its events name it where it is now) was read after it.
        unplaced, self._unplaced = self._unplaced, []
        for path in unplaced:
            self._scan_later(path, retry=False)

    def _follow(self, changes: Iterable[Change]) -> None:
        for change in changes:
            kind, path = change.kind, change.path
            if kind == ChangeKind.RESCAN:
                self._give_up("events were lost (a fanotify queue overflow)")
                return
            if kind == ChangeKind.ROOT_LOST:
                self._give_up("the source was lost")
                return
            if kind in (ChangeKind.NEW_DIR, ChangeKind.LOST_WATCH):
                self._drop(path)
                self._scan_later(path)
            elif kind == ChangeKind.REMOVED:
                self._drop(path)
            elif kind == ChangeKind.MOVED:
                if change.is_dir:
                    self._move(change.old_path, path)
                else:  # a file took the name: whatever the index had at either name is scanned anew
                    for each in (change.old_path, path):
                        if self._find(each) is not None:
                            self._drop(each)
                            self._scan_later(each)
            elif kind in _FILE_CHANGES and not change.is_dir and self._find(path) is not None:
                self._drop(path)
                self._scan_later(path)

    def _give_up(self, reason: str) -> None:
        self.unusable = reason
        self.walks.close()
        self._rescans.clear()

    def _find(self, path: str) -> WatchedDir | None:
        return None if path in ("", ".") else self.tree.find(path)

    def _excluded(self, path: str) -> bool:
        return bool(self.excluder) and self.excluder.excludes(path, True)

    def _drop(self, path: str) -> None:
        node = self._find(path)
        if node is not None:
            self.tree.detach(node)

    def _scan_later(self, path: str, retry: bool = True) -> None:
        """Scan ``path`` anew at the next step (as its parent's entry, wherever that parent is
        then). A parent the index lacks is looked for again once the changes read with it are
        followed (``retry``); after that, that parent is still to be walked, or left out."""
        if not path or path == "." or self._excluded(path):
            return
        parent_path, _, name = path.rpartition("/")
        parent = self.tree.find(parent_path)
        if parent is not None:
            self._rescans[(parent.wd, name)] = parent
            if len(self._rescans) > RESCAN_LIMIT:
                self.begin()
        elif retry and len(self._unplaced) < UNREADABLE_LIMIT:
            self._unplaced.append(path)

    def _move(self, old: str, new: str) -> None:
        """A directory renamed within the source: its node moves when the disk shows that inode
        at ``new`` under the directory the index has at new's parent; else scanned anew."""
        node = self._find(old)
        if node is None or self._excluded(new) or not self._placed_on_disk(node, new):
            self._drop(old)
            self._drop(new)
            self._scan_later(new)
            return
        self.tree.take_out(node)
        if not self.tree.put_back(node, new):
            self._scan_later(new)

    def _placed_on_disk(self, node: WatchedDir, path: str) -> bool:
        """Whether the directory of ``node`` is at ``path`` on disk now, under the directory the
        index has at path's parent (and that is no mount point)."""
        parent_path = path.rpartition("/")[0]
        parent = self.tree.find(parent_path)
        if parent is None or is_within(parent, node) or self.is_mount_point(path):
            return False
        try:
            status = os.lstat(self._absolute(path))
            parent_status = os.lstat(self._absolute(parent_path))
        except OSError:
            return False
        return (stat.S_ISDIR(status.st_mode) and (status.st_dev, status.st_ino) == (self._root_device, node.wd)
                and (parent_status.st_dev, parent_status.st_ino) == (self._root_device, parent.wd))

    def _scan_anew(self, parent: WatchedDir, name: str) -> None:
        """Drop what the index has as ``name`` in ``parent`` and enter what the disk has there,
        with a walk of what is below it. When the parent left the index meanwhile, nothing (its
        own scan covers it); when the disk has another directory or none at the parent's path,
        the parent is scanned anew itself (a rename above it is still queued)."""
        if self.tree.by_wd.get(parent.wd) is not parent:
            return
        parent_path = self.tree.path_of(parent)
        path = f"{parent_path}/{name}" if parent_path else name
        existing = parent.children.get(name) if parent.children else None
        if existing is not None:
            self.tree.detach(existing)
        if self._excluded(path):
            return
        try:
            parent_status = os.lstat(self._absolute(parent_path))
        except OSError:
            parent_status = None
        if parent_status is None or (parent_status.st_dev, parent_status.st_ino) != (self._root_device, parent.wd):
            # The parent is not at the path the index has for it (a rename or deletion above
            # it is still queued): it is looked at again from its own parent.
            if parent.parent is None:
                if parent_status is not None:
                    self._give_up("the source is another directory now")
                return  # (gone: its own event says so)
            self.tree.detach(parent)
            self._rescans[(parent.parent.wd, parent.name)] = parent.parent
            return
        try:
            directory_fd = dirfd.open_relative(self.source, path)
        except OSError as error:
            if error.errno not in dirfd.GONE_ERRNOS:
                self._note_unreadable(path)
            return
        try:
            status = os.fstat(directory_fd)
            node = self.watch_open_directory(directory_fd, status, parent, name, path)
            below = None if node is None else self.subdirectories(directory_fd, path)
        except BaseException:
            os.close(directory_fd)
            raise
        if node is None:
            os.close(directory_fd)
            return
        self.walks.begin(node, directory_fd, below)

    def _absolute(self, relative: str) -> str:
        return os.path.join(self.source, relative) if relative else self.source

