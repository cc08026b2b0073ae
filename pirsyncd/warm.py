"""A warm start: what changed at the source while the daemon was down, found in the watch
walk from the restart state's watermark and directory index (:mod:`pirsyncd.state`).

For every entry the walk lists (one lstat each; ctimes as integers, nanoseconds):

    a file, symlink, ... with ctime >= watermark ──> CHANGED (sent byte for byte)
    a directory the index does not know ─────────> NEW_DIR (sent whole; nothing below looked at)
    a directory where the index had it (same parent, same name)
                          with ctime >= watermark ──> ENTRIES (its own entries checked: deletions)
    a directory the index had elsewhere ─────────> MOVED from there (renamed at the destination,
                                                    then verified), or NEW_DIR when the renames
                                                    cannot be trusted (nested, a cycle, or the
                                                    destination's layout moved on since)

A directory's ctime changes when an entry is created, deleted or renamed in it, and when it
is renamed itself; so a directory older than the watermark is where the index says, and
holds what it held then, and a directory whose inode number was reused by a new one is
still checked or verified, never trusted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from pirsyncd.events import Change, ChangeKind, join
from pirsyncd.filters import Excluder
from pirsyncd.state import Index


class WarmScan:
    """Fed each directory's listing by the watch walk (:meth:`visit`), parents first."""

    def __init__(self, source: str, excluder: Excluder, watermark: float, index: Index) -> None:
        self.source = source
        self.excluder = excluder
        self.watermark_ns = int(watermark * 1_000_000_000)
        self.index = index
        self.changes: list[Change] = []
        self.moves: list[tuple[str, str]] = []  # (old path, new path) of directories
        self._whole: set[str] = set()  # directories sent whole: what is below is not looked at
        self._old_paths: dict[int, str | None] = {}
        root = os.stat(source)
        if root.st_ctime_ns >= self.watermark_ns:
            self.changes.append(Change(ChangeKind.ENTRIES, ".", True))

    def visit(self, parent: str, ino: int, entries: list[os.DirEntry[str]]) -> None:
        """One directory's listing: ``parent`` its path, ``ino`` its inode."""
        if parent in self._whole:
            self._whole.update(join(parent, entry.name) for entry in entries if entry.is_dir(follow_symlinks=False))
            return
        for entry in entries:
            is_dir = entry.is_dir(follow_symlinks=False)
            path = join(parent, entry.name)
            if self.excluder and self.excluder.excludes(path, is_dir):
                continue
            try:
                recent = entry.stat(follow_symlinks=False).st_ctime_ns >= self.watermark_ns
            except OSError:
                continue  # gone already: its directory's ctime or its event says so
            if not is_dir:
                if recent:
                    self.changes.append(Change(ChangeKind.CHANGED, path))
                continue
            saved = self.index.get(entry.inode())
            if saved is None:
                self._send_whole(path)
            elif saved == (ino, entry.name):
                if recent:
                    self.changes.append(Change(ChangeKind.ENTRIES, path, True))
            else:
                old = self._old_path(entry.inode())
                if old is None:
                    self._send_whole(path)
                else:
                    self.moves.append((old, path))

    def unreadable(self, paths: Iterable[str]) -> None:
        """Directories the walk could not list: sent whole (rsync says what fails)."""
        for path in sorted(paths):
            if path and path not in self._whole and not self._inside_whole(path):
                self._send_whole(path)

    def result(self, trusted: bool = True) -> list[Change]:
        """The changes, renames first (in an order the destination can follow).

        Not ``trusted``: a job may have run after the state was written (even been killed
        mid-transfer), so the destination's layout may have moved on and rsync may have left
        temporary files next to a file it was sending: renamed directories are sent whole,
        and the directory of every changed file has its own entries checked."""
        moves, whole = order_moves(self.moves) if trusted else ([], [new for _, new in self.moves])
        sent_whole = self._whole | set(whole)
        renames = [Change(ChangeKind.MOVED, new, True, old) for old, new in moves
                   if not _inside(new, sent_whole)]
        changes = [change for change in self.changes if not _inside(change.path, sent_whole)]
        if not trusted:
            checked = {change.path for change in changes if change.kind == ChangeKind.ENTRIES}
            parents = dict.fromkeys(change.path.rpartition("/")[0] or "." for change in changes
                                    if change.kind == ChangeKind.CHANGED)
            changes += [Change(ChangeKind.ENTRIES, parent, True) for parent in parents if parent not in checked]
        return renames + [Change(ChangeKind.NEW_DIR, path, True) for path in whole] + changes

    def _send_whole(self, path: str) -> None:
        self._whole.add(path)
        self.changes.append(Change(ChangeKind.NEW_DIR, path, True))

    def _inside_whole(self, path: str) -> bool:
        return _inside(path, self._whole)

    def _old_path(self, ino: int) -> str | None:
        """Where the index had a directory, from its chain of parents; None if it is broken."""
        if ino in self._old_paths:
            return self._old_paths[ino]
        names: list[str] = []
        current = ino
        path: str | None = None
        for _ in range(4096):
            saved = self.index.get(current)
            if saved is None:
                break
            parent, name = saved
            if parent == 0:
                path = "/".join(reversed(names))
                break
            names.append(name)
            current = parent
        self._old_paths[ino] = path or None
        return path or None


def order_moves(moves: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Renames the destination can replay one after the other (one whose target is another's
    old name after that one), and the new paths to send whole instead: a rename inside
    another renamed directory (its old or its new place moved too), or part of a cycle.

    >>> order_moves([("a", "b"), ("b", "c"), ("x", "y"), ("x/1", "z")])
    ([('b', 'c'), ('x', 'y'), ('a', 'b')], ['z'])
    """
    olds = {old for old, _ in moves}
    news = {new for _, new in moves}
    whole = [new for old, new in moves if _has_ancestor(old, olds) or _has_ancestor(new, news)]
    remaining = {old: new for old, new in moves if new not in whole}
    ordered: list[tuple[str, str]] = []
    while remaining:
        ready = sorted((old for old, new in remaining.items() if new not in remaining), key=remaining.__getitem__)
        if not ready:  # a cycle (a swap): send one of them whole
            ready_old = min(remaining)
            whole.append(remaining.pop(ready_old))
            continue
        ordered += [(old, remaining.pop(old)) for old in ready]
    return ordered, whole


def _has_ancestor(path: str, paths: set[str]) -> bool:
    parent = path.rpartition("/")[0]
    while parent:
        if parent in paths:
            return True
        parent = parent.rpartition("/")[0]
    return False


def _inside(path: str, directories: set[str]) -> bool:
    """True when a directory above ``path`` is one of ``directories``."""
    return _has_ancestor(path, directories)
