"""Turn inotify events into changes of the source tree (pure: no I/O).

The :class:`WatchTree` maps watch descriptors to directories; each node knows only its
parent and its name, so a path is built on demand. A renamed directory is taken out of the
tree at its MOVED_FROM and put back at its MOVED_TO (:meth:`WatchTree.take_out`,
:meth:`WatchTree.put_back`), which costs a pass over the directories below it.
:class:`EventTranslator` reads events in kernel order, pairs moves by cookie and
keeps the tree right as it goes, so every event is resolved against the tree as it
was when the kernel queued it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator
from typing import NamedTuple

# Kernel event bits (linux/inotify.h); names as in the man page.
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
              | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)


class Event(NamedTuple):
    """Same shape as inotify_simple.Event, so tests can build events by hand."""

    wd: int
    mask: int
    cookie: int
    name: str


class WatchedDir:
    __slots__ = ("children", "ino", "name", "parent", "wd")

    def __init__(self, wd: int, name: str, parent: WatchedDir | None, ino: int = 0) -> None:
        self.wd = wd
        self.name = name
        self.parent = parent
        self.ino = ino  # the directory's inode number (0: not known), for the restart state
        self.children: dict[str, WatchedDir] | None = None


def subtree(node: WatchedDir) -> Iterator[WatchedDir]:
    """A directory and every directory below it in the tree, parents before children."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if current.children:
            stack.extend(current.children.values())


class WatchTree:
    """Watched directories by watch descriptor and by position in the tree."""

    def __init__(self) -> None:
        self.root: WatchedDir | None = None
        self.by_wd: dict[int, WatchedDir] = {}
        self.version = 0  # changes whenever a directory is added, moved or forgotten

    def __len__(self) -> int:
        return len(self.by_wd)

    def path_of(self, node: WatchedDir) -> str:
        """Relative path of a watched directory; '' for the source root."""
        names = []
        while node.parent is not None:
            names.append(node.name)
            node = node.parent
        return "/".join(reversed(names))

    def find(self, path: str) -> WatchedDir | None:
        node = self.root
        if path == "" or node is None:
            return node
        for name in path.split("/"):
            if node.children is None or name not in node.children:
                return None
            node = node.children[name]
        return node

    def directories(self) -> Iterator[tuple[int, int, str]]:
        """(inode, parent's inode, name) of every watched directory, parents first; the
        root's parent is 0 and its name ''. A directory whose inode is not known (0) is left
        out with what lies below it."""
        if self.root is None or not self.root.ino:
            return
        yield self.root.ino, 0, ""
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.children:
                for name, child in node.children.items():
                    if child.ino:
                        yield child.ino, node.ino, name
                        stack.append(child)

    def add(self, wd: int, path: str, ino: int = 0) -> WatchedDir:
        """Register a watch for the directory at path (its parent must be registered)."""
        self.version += 1
        if path == "":
            node = WatchedDir(wd, "", None, ino)
            self.root = node
        else:
            parent_path, _, name = path.rpartition("/")
            parent = self.find(parent_path)
            if parent is None:
                raise KeyError(parent_path)
            stale = self.by_wd.get(wd)
            if stale is not None and is_within(parent, stale):
                # The map says this directory contains its own parent: it is stale.
                self.detach(stale)
                raise KeyError(parent_path)
            existing = parent.children.get(name) if parent.children else None
            if existing is not None and existing.wd == wd:
                existing.ino = ino or existing.ino
                return existing
            if existing is not None:
                self.detach(existing)
            node = WatchedDir(wd, name, parent, ino)
            if parent.children is None:
                parent.children = {}
            parent.children[name] = node
        self.by_wd[wd] = node
        return node

    def add_child(self, parent: WatchedDir, name: str, wd: int, ino: int = 0) -> WatchedDir:
        """Register a new watch for directory ``name`` in ``parent`` (a fast path for scans)."""
        self.version += 1
        node = WatchedDir(wd, name, parent, ino)
        if parent.children is None:
            parent.children = {}
        existing = parent.children.get(name)
        if existing is not None:
            self.detach(existing)
        parent.children[name] = node
        self.by_wd[wd] = node
        return node

    def detach(self, node: WatchedDir) -> list[int]:
        """Forget a directory and everything below it; return their watch descriptors."""
        return [each.wd for each in self.take_out(node)]

    def take_out(self, node: WatchedDir) -> list[WatchedDir]:
        """Forget a directory and everything below it; return their nodes, which keep their
        names, parents and children, so that :meth:`put_back` can place them again."""
        self.version += 1
        siblings = node.parent.children if node.parent is not None else None
        if siblings is not None and siblings.get(node.name) is node:
            del siblings[node.name]
        removed = list(subtree(node))
        for current in removed:
            if self.by_wd.get(current.wd) is current:
                del self.by_wd[current.wd]
        return removed

    def put_back(self, node: WatchedDir, path: str) -> bool:
        """Place a directory taken out (with what was below it) at ``path``; False when its
        parent is not watched. A watch descriptor entered anew meanwhile (the directory came
        back and was watched again) keeps its new entry, and its old node stays out."""
        parent_path, _, name = path.rpartition("/")
        parent = self.find(parent_path)
        if parent is None or is_within(parent, node):
            return False
        self.version += 1
        replaced = parent.children.get(name) if parent.children else None
        if replaced is not None and replaced is not node:
            self.detach(replaced)
        node.name, node.parent = name, parent
        if parent.children is None:
            parent.children = {}
        parent.children[name] = node
        stack = [node]
        while stack:
            current = stack.pop()
            if current.wd in self.by_wd:
                siblings = current.parent.children if current.parent is not None else None
                if siblings is not None and siblings.get(current.name) is current:
                    del siblings[current.name]
                continue
            self.by_wd[current.wd] = current
            if current.children:
                stack.extend(current.children.values())
        return True



class ChangeKind(enum.Enum):
    """What happened to a path of the source, in the words of the pending set."""

    CHANGED = "changed"  # a file's content or metadata, or a directory's metadata
    WRITING = "writing"  # a file created or written, not closed yet: its content may be partial
    CLOSED = "closed"  # a file closed after writing: its content is complete (a CHANGED)
    NEW_DIR = "new-dir"  # a new directory (or one moved in): watch it and send all of it
    REMOVED = "removed"  # gone from the source (deleted or moved out of the tree)
    MOVED = "moved"  # renamed within the tree: old_path -> path
    RESCAN = "rescan"  # events were lost: only a full sync can be sure
    ROOT_LOST = "root-lost"  # the source root itself was deleted, moved or unmounted
    LOST_WATCH = "lost-watch"  # a directory's watch vanished unexpectedly (e.g. unmount below the root)
    ENTRIES = "entries"  # a directory's entries may differ at the destination: check its own (warm start)


@dataclasses.dataclass(frozen=True)
class Change:
    kind: ChangeKind
    path: str = ""
    is_dir: bool = False
    old_path: str = ""


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def is_within(node: WatchedDir, ancestor: WatchedDir) -> bool:
    """Whether ``node`` is ``ancestor`` or lies below it in their tree."""
    current: WatchedDir | None = node
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False


class EventTranslator:
    """Feed it events in kernel order; it returns Changes and keeps the WatchTree right.

    Watch descriptors of directories that left the tree are collected in
    ``watches_to_remove`` (the caller removes them from the kernel). A MOVED_FROM
    whose MOVED_TO has not arrived yet is held until :meth:`finish_unpaired`.
    """

    def __init__(self, tree: WatchTree) -> None:
        self.tree = tree
        # A MOVED_FROM by cookie: the old path, whether a directory, and the directory's node,
        # taken out of the tree at once (it is no longer at that path) until its MOVED_TO.
        self.unpaired_moves: dict[int, tuple[str, bool, WatchedDir | None]] = {}
        # The watches of directories taken out so, by descriptor: their events still resolve
        # (to the old path, as the kernel queued them before the rename was known).
        self.moved_away: dict[int, WatchedDir] = {}
        self.watches_to_remove: list[int] = []

    def feed(self, events: Iterable[Event]) -> list[Change]:
        changes: list[Change] = []
        for event in events:
            changes.extend(self._translate(event))
        return changes

    def finish_unpaired(self) -> list[Change]:
        """Treat every held MOVED_FROM as a move out of the tree: its watches go, unless its
        directory came back meanwhile (moved out and in again) and was watched anew."""
        changes = []
        for path, is_dir, node in self.unpaired_moves.values():
            if node is not None:
                self.watches_to_remove.extend(
                    each.wd for each in self._stop_holding(node) if each.wd not in self.tree.by_wd)
            changes.append(Change(ChangeKind.REMOVED, path, is_dir))
        self.unpaired_moves.clear()
        return changes

    def _hold(self, path: str) -> WatchedDir | None:
        """Take the directory moved away from ``path`` out of the tree until its MOVED_TO."""
        node = self.tree.find(path)
        if node is None or node.parent is None:
            return None
        for each in self.tree.take_out(node):
            self.moved_away[each.wd] = each
        return node

    def _stop_holding(self, node: WatchedDir) -> list[WatchedDir]:
        """The nodes of a directory held since its MOVED_FROM, no longer held."""
        nodes = list(subtree(node))
        for current in nodes:
            if self.moved_away.get(current.wd) is current:
                del self.moved_away[current.wd]
        return nodes

    def _place(self, node: WatchedDir | None, path: str) -> bool:
        """Put a directory held since its MOVED_FROM at its new ``path``; False (its watches
        to be removed, for it to be watched anew) when it cannot be placed."""
        if node is None:
            return False
        nodes = self._stop_holding(node)
        if self.tree.put_back(node, path):
            return True
        self.watches_to_remove.extend(each.wd for each in nodes if each.wd not in self.tree.by_wd)
        return False

    def _translate(self, event: Event) -> tuple[Change, ...]:
        mask = event.mask
        if mask & IN_Q_OVERFLOW:
            return (Change(ChangeKind.RESCAN),)
        node = self.tree.by_wd.get(event.wd)
        if node is None:
            node = self.moved_away.get(event.wd)
            if node is None:
                return ()  # a watch we already dropped; its directory is accounted for
            if mask & IN_IGNORED and not event.name:
                del self.moved_away[event.wd]  # gone after it was moved away: that move says so
                return ()
        is_root = node.parent is None
        if not event.name:
            # An event about the watched directory itself.
            if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
                return (Change(ChangeKind.ROOT_LOST),) if is_root else ()
            if mask & IN_IGNORED:
                if is_root:
                    return (Change(ChangeKind.ROOT_LOST),)
                path = self.tree.path_of(node)
                self.tree.detach(node)
                return (Change(ChangeKind.LOST_WATCH, path, True),)
            if mask & IN_ATTRIB and is_root:
                # Other directories' metadata changes arrive through their parent's watch.
                return (Change(ChangeKind.CHANGED, ".", True),)
            return ()
        path = join(self.tree.path_of(node), event.name)
        is_dir = bool(mask & IN_ISDIR)
        if mask & IN_MOVED_FROM:
            self.unpaired_moves[event.cookie] = (path, is_dir, self._hold(path) if is_dir else None)
            return ()
        if mask & IN_MOVED_TO:
            held = self.unpaired_moves.pop(event.cookie, None)
            if held is None:
                # Moved in from outside: a file complete as it is (whatever it replaced is gone).
                return (Change(ChangeKind.NEW_DIR, path, True),) if is_dir else (Change(ChangeKind.CLOSED, path),)
            old_path, _, moved = held
            if is_dir and not self._place(moved, path):
                # Never watched (created and moved before we saw it), or its new parent is not:
                # send it whole.
                return (Change(ChangeKind.REMOVED, old_path, True), Change(ChangeKind.NEW_DIR, path, True))
            return (Change(ChangeKind.MOVED, path, is_dir, old_path),)
        if mask & IN_DELETE:
            if is_dir and (deleted := self.tree.find(path)) is not None and deleted.parent is not None:
                self.tree.detach(deleted)  # its watch goes with it (IN_IGNORED)
            return (Change(ChangeKind.REMOVED, path, is_dir),)
        if mask & IN_CREATE and is_dir:
            return (Change(ChangeKind.NEW_DIR, path, True),)
        if mask & IN_CLOSE_WRITE and not is_dir:
            return (Change(ChangeKind.CLOSED, path),)
        if mask & (IN_CREATE | IN_MODIFY) and not mask & IN_ATTRIB and not is_dir:
            # A symlink, a hard link or a device node is created without a close to follow:
            # the reader of these changes tells them apart (SourceSide.read).
            return (Change(ChangeKind.WRITING, path),)
        if mask & (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB):
            return (Change(ChangeKind.CHANGED, path, is_dir),)
        return ()
