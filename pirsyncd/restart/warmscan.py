"""A warm start: what changed at the source while the daemon was down, from the restart
state's watermark and directory index (:mod:`pirsyncd.restart.statefile`), the watch tree just built
and one ``find -newerct`` over the source (ctimes as the kernel keeps them):

    a watched directory the index does not know ─> NEW_DIR (sent whole; nothing below looked at)
    one the index had elsewhere (another parent
      or name) ──────────────────────────────────> MOVED from there (renamed at the destination,
                                                    then verified), or NEW_DIR when the renames
                                                    cannot be trusted (nested, a cycle, or the
                                                    destination's layout moved on since)
    an entry with ctime newer than the watermark:
      a file, symlink, ... ──────────────────────> CHANGED (sent byte for byte)
      a directory where the index had it ────────> ENTRIES (its own entries checked: deletions)

A directory's ctime changes when an entry is created, deleted or renamed in it, and when it
is renamed itself; so a directory older than the watermark is where the index says, and
holds what it held then, and a directory whose inode number was reused by a new one is
still checked or verified, never trusted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from pirsyncd.config.filters import Excluder
from pirsyncd.restart.statefile import Index
from pirsyncd.source.events import Change, ChangeKind, WatchedDir, WatchTree, join


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
        self._in_place: set[str] = set()  # directories where the index had them
        root = os.stat(source)
        if root.st_ctime_ns >= self.watermark_ns:
            self.changes.append(Change(ChangeKind.ENTRIES, ".", True))

    def directories(self, tree: WatchTree) -> None:
        """Judge every watched directory against the index: where it was at the watermark
        (in place, renamed, unknown). Done at once after the watch walk, before any event is
        read, so the tree is the source as the walk saw it."""
        if tree.root is None:
            return
        stack: list[tuple[str, WatchedDir]] = [("", tree.root)]
        while stack:
            parent, node = stack.pop()
            for name, child in (node.children or {}).items():
                path = join(parent, name)
                saved = self.index.get(child.ino)
                if saved is None or not child.ino:
                    self._send_whole(path)
                    continue  # below it nothing needs judging
                if saved != (node.ino, name):
                    old = self._old_path(child.ino)
                    if old is None:
                        self._send_whole(path)
                        continue
                    self.moves.append((old, path))
                else:
                    self._in_place.add(path)
                stack.append((path, child))

    def find_command(self, kept_out: Iterable[str] = ()) -> list[str]:
        """argv listing every entry whose ctime is newer than the watermark (GNU find: a
        C walk with one lstat per entry, several times faster than the same in Python),
        never descending into the ``kept_out`` mount points (relative paths).

        >>> scan = WarmScan.__new__(WarmScan); scan.source, scan.watermark_ns = "/srv", 5 * 10**9
        >>> scan.find_command(["root/sys", "a*"])  # doctest: +NORMALIZE_WHITESPACE
        ['find', '/srv', '-mindepth', '1', '(', '-path', '/srv/a\\\\*', '-o', '-path', '/srv/root/sys', ')',
         '-prune', '-o', '-newerct', '@5.000000', '-printf', '%y %P\\\\0']
        """
        prune: list[str] = []
        for path in sorted(kept_out):
            prune += ["-o", "-path", _glob_literal(join(self.source.rstrip("/"), path))]
        if prune:
            prune = ["(", *prune[1:], ")", "-prune", "-o"]
        return ["find", self.source, "-mindepth", "1", *prune, "-newerct", f"@{self.watermark_ns / 1e9:.6f}",
                "-printf", "%y %P\\0"]

    def entries_found(self, output: bytes, tree: WatchTree) -> None:
        """Read find's list: files are sent, directories in place have their entries checked.
        Entries in unwatched (excluded) or whole-sent directories are left out."""
        wanted: dict[str, bool] = {}  # directory -> whether its entries are looked at
        for record in output.split(b"\0"):
            if len(record) < 3:
                continue
            kind, path = record[:1], os.fsdecode(record[2:])
            parent = path.rpartition("/")[0]
            if parent not in wanted:
                wanted[parent] = not _has_ancestor(path, self._whole) and not self._excluded(parent, tree)
            if not wanted[parent] or path in self._whole or (
                    self.excluder and self.excluder.excludes(path, kind == b"d")):
                continue
            if kind != b"d":
                self.changes.append(Change(ChangeKind.CHANGED, path))
            elif path in self._in_place or tree.find(path) is None:
                # (not in the tree: renamed while find ran; its event follows, check it anyway)
                self.changes.append(Change(ChangeKind.ENTRIES, path, True))

    def _excluded(self, directory: str, tree: WatchTree) -> bool:
        """True when ``directory`` or one above it is excluded (not watched for that reason)."""
        if not self.excluder or tree.find(directory) is not None:
            return False
        components = directory.split("/")
        return any(self.excluder.excludes("/".join(components[:depth]), True)
                   for depth in range(1, len(components) + 1))

    def unreadable(self, paths: Iterable[str]) -> None:
        """Directories the walk could not list: sent whole (rsync says what fails)."""
        for path in sorted(paths):
            if path and path not in self._whole and not _has_ancestor(path, self._whole):
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
                   if not _has_ancestor(new, sent_whole)]
        changes = [change for change in self.changes if not _has_ancestor(change.path, sent_whole)]
        if not trusted:
            checked = {change.path for change in changes if change.kind == ChangeKind.ENTRIES}
            parents = dict.fromkeys(change.path.rpartition("/")[0] or "." for change in changes
                                    if change.kind == ChangeKind.CHANGED)
            changes += [Change(ChangeKind.ENTRIES, parent, True) for parent in parents if parent not in checked]
        return renames + [Change(ChangeKind.NEW_DIR, path, True) for path in whole] + changes

    def _send_whole(self, path: str) -> None:
        self._whole.add(path)
        self.changes.append(Change(ChangeKind.NEW_DIR, path, True))

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
    """True when a directory above ``path`` is one of ``paths``."""
    parent = path.rpartition("/")[0]
    while parent:
        if parent in paths:
            return True
        parent = parent.rpartition("/")[0]
    return False


def _glob_literal(path: str) -> str:
    """``path`` as a find -path pattern that matches only itself."""
    return "".join("\\" + character if character in "*?[]\\" else character for character in path)
