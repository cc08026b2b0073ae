"""Tree walks in bounded steps, so that watching a big tree (after an inotify queue overflow,
or one moved into the source) never holds the loop for longer than a step.

Every walk in progress is one stack of open directories (levels), each with the names of the
subdirectories it has left to visit; a new walk is pushed on top, so a small new directory is
done before a big tree walked for a while goes on. A step takes the top level's next name,
opens it from the level's descriptor without following a symlink, watches it, and pushes it
if it has subdirectories itself, until the step's budget (directories, seconds) is spent.

Between steps the loop reads inotify: renames and deletions move or drop the watched nodes of
the tree. A level knows its directory by its node, never by a path kept from before, so its
path is read from the tree at each step, and a level whose node has left the tree (deleted,
moved out, or found at another path) is dropped with its descriptor: whoever watches that
directory anew walks it anew.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

from pirsyncd.config.filters import Excluder
from pirsyncd.source.events import WatchedDir, WatchTree, join

# A step's time budget: the loop services inotify, children, signals and the watchdog between
# two steps. A directory costs some tens of microseconds (open, fstat, inotify_add_watch, a
# listing), so a step covers a few hundred.
STEP_SECONDS = 0.01
# Descriptors the pending walks may keep open after a read of events (each pending walk holds
# one per level of its branch): past this, walks go on at once until they hold no more.
MAX_OPEN_LEVELS = 256


class WalkSite(Protocol):
    """What a walk needs of the watcher it watches directories for (or of the directory index
    it enters them into, :class:`pirsyncd.source.dirindex.DirectoryIndex`, with no watch)."""

    tree: WatchTree
    excluder: Excluder

    def open_subdirectory(self, parent_fd: int, name: str, relative: str) -> int | None: ...

    def watch_open_directory(self, directory_fd: int, status: os.stat_result, parent: WatchedDir | None,
                             name: str, relative: str) -> WatchedDir | None: ...

    def subdirectories(self, directory_fd: int, relative: str) -> list[str] | None: ...


class _Level:
    """One open, watched directory of a walk, with the subdirectories left to visit. Its path
    is read from its node (``path`` is a copy, valid while ``moves_seen`` is current)."""

    __slots__ = ("fd", "moves_seen", "node", "path", "subdirectories")

    def __init__(self, node: WatchedDir, fd: int, subdirectories: list[str]) -> None:
        self.node, self.fd = node, fd
        self.subdirectories = subdirectories
        self.path = ""
        self.moves_seen = -1


class Walks:
    """The tree walks in progress of one watcher, as one stack of open levels it owns."""

    def __init__(self, site: WalkSite, clock: Callable[[], float] = time.monotonic) -> None:
        self.site = site
        self.clock = clock
        self._levels: list[_Level] = []
        self._moves = 0  # counts the reads of events that may have moved directories

    def __bool__(self) -> bool:
        return bool(self._levels)

    def __len__(self) -> int:
        return len(self._levels)

    def begin(self, node: WatchedDir, directory_fd: int, subdirectories: list[str] | None) -> None:
        """Walk below the watched directory ``node``, open as ``directory_fd`` (owned by the walk
        from now on), whose ``subdirectories`` were listed after its watch was added."""
        if subdirectories:
            self._levels.append(_Level(node, directory_fd, subdirectories))
        else:
            os.close(directory_fd)

    def tree_moved(self) -> None:
        """Events were applied to the tree: the paths of the levels are read again."""
        self._moves += 1

    def step(self, max_directories: int | None = None, seconds: float | None = STEP_SECONDS,
             max_levels: int | None = None) -> bool:
        """Visit directories until ``max_directories`` are done, ``seconds`` have passed, or (with
        ``max_levels``) no more than that many levels are open; None: no such bound. Return
        whether walks are left."""
        site, tree, levels = self.site, self.site.tree, self._levels
        until = None if seconds is None else self.clock() + seconds
        done = 0
        while levels:
            if max_levels is not None and len(levels) <= max_levels:
                break
            if (max_directories is not None and done >= max_directories) or (
                    until is not None and done and self.clock() >= until):
                break
            level = levels[-1]
            if not level.subdirectories or tree.by_wd.get(level.node.wd) is not level.node:
                levels.pop()  # done, or its directory left the tree (or is watched elsewhere now)
                os.close(level.fd)
                continue
            if level.moves_seen != self._moves:
                level.path, level.moves_seen = tree.path_of(level.node), self._moves
            name = level.subdirectories.pop()
            path = join(level.path, name)
            if site.excluder and site.excluder.excludes(path, True):
                continue
            done += 1
            child_fd = site.open_subdirectory(level.fd, name, path)
            if child_fd is None:
                continue
            try:
                status = os.fstat(child_fd)
                node = site.watch_open_directory(child_fd, status, level.node, name, path)
                # Its link count read before the watch existed could miss a subdirectory made
                # in between (whose event then never comes): looked at after the watch.
                below = None if node is None else site.subdirectories(child_fd, path)
            except BaseException:
                os.close(child_fd)
                raise
            if node is not None and below:
                child = _Level(node, child_fd, below)
                child.path, child.moves_seen = path, self._moves
                levels.append(child)
            else:
                os.close(child_fd)
        return bool(levels)

    def finish(self) -> None:
        """Walk everything left, at once (the walk at start, before READY=1)."""
        self.step(seconds=None)

    def close(self) -> None:
        """Give up every walk in progress (a stop, a new watcher): close their descriptors."""
        while self._levels:
            os.close(self._levels.pop().fd)


def leaf_device(root: os.stat_result, subdirectories: int) -> int | None:
    """The root's device when its link count is 2 + its subdirectories (ext4, xfs, tmpfs do
    that; btrfs and others say 1), so that a directory with 2 links has none; else None.
    A root without subdirectories proves nothing."""
    return root.st_dev if subdirectories and root.st_nlink == subdirectories + 2 else None
