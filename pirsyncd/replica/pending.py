"""The pending changes: what the next batch must send (pure, clock injected).

Pending paths live in a tree of nodes, one per distinct path however many events it
gets, so adding a change costs O(depth) and memory follows the number of distinct
pending paths. A directory that is new (or deleted) subsumes everything below it:
its children are dropped, as the batch sends (or deletes) it whole. A rename moves
the pending subtree with it in O(depth), so changes made before a rename are sent
under the new name.

The pending changes are due ``delay`` after the oldest of them was read, however many
follow: under steady change a batch goes every ``delay`` seconds, each change waits
``delay`` at most, and the changes read while a batch runs make the next one.

A file being written (created or modified, not closed yet) is kept aside until it is
closed, for at most ``max(1 s, 10 * delay)``: sending it earlier sends a partial file
that its close sends again. What is kept aside does not hold back the other changes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from pirsyncd.replica.batch import Batch, Move
from pirsyncd.replica.keptaside import KeptAside
from pirsyncd.source.events import Change, ChangeKind

# Node flags.
FLAG_CHANGED = 1  # send this path's content and metadata (no quick check)
FLAG_REMOVED = 2  # gone at the source: delete at the destination
FLAG_NEW_DIR = 4  # a new directory: send all of it, recursively
FLAG_MOVED = 8  # arrived by a rename: its old self may be renamed at the destination
FLAG_DIR_METADATA = 16  # a directory's own metadata changed: check it without resending it
FLAG_ENTRIES = 32  # a directory's own entries may differ at the destination: check them (warm start)


class _Node:
    __slots__ = ("children", "flags", "name", "parent")

    def __init__(self, name: str, parent: _Node | None) -> None:
        self.name = name
        self.parent = parent
        self.flags = 0
        self.children: dict[str, _Node] | None = None


class Pending:
    """Pending changes plus the deadline at which they should be sent.

    ``delay`` bounds the age of every change: the changes are due ``delay`` after the
    oldest of them was read (:meth:`deadline`), not after a quiet period.
    """

    def __init__(self, delay: float, full_sync_threshold: int) -> None:
        self.delay = delay
        self.full_sync_threshold = full_sync_threshold
        self.writing = KeptAside()  # files being written; not emptied by take()
        self._reset()

    def _reset(self) -> None:
        self._root = _Node("", None)
        self.count = 0
        self.full_sync_needed = False
        # With a full sync pending: files known to have changed, compared byte for byte after
        # it (its quick check cannot see a rewrite that kept size and mtime). Bounded.
        self.compare_after_full: set[str] = set()
        self.moves: list[Move] = []
        self.oldest_change_at: float | None = None  # when the oldest change not taken yet was read
        # The same, for the lag readers see: make_due leaves it be, put_back keeps a batch's own.
        self.first_change_at: float | None = None

    def __bool__(self) -> bool:
        return self.full_sync_needed or self.count > 0 or bool(self.moves) or bool(self.writing)

    @property
    def hold_limit(self) -> float:
        """How long a file being written is kept aside at most."""
        return max(1.0, 10 * self.delay)

    # -- adding ------------------------------------------------------------
    def _node(self, path: str, create: bool = True) -> _Node | None:
        """The node for path, or None when an ancestor subsumes it (or create is False)."""
        node = self._root
        if path in ("", "."):
            return node
        for name in path.split("/"):
            if node.flags & (FLAG_NEW_DIR | FLAG_REMOVED) and node is not self._root:
                return None
            children = node.children
            if children is None:
                if not create:
                    return None
                children = node.children = {}
            child = children.get(name)
            if child is None:
                if not create:
                    return None
                child = children[name] = _Node(name, node)
            node = child
        return node

    def _set_flags(self, node: _Node, flags: int) -> None:
        if node.flags == 0 and flags:
            self.count += 1
        node.flags = flags

    def _drop_children(self, node: _Node) -> None:
        if node.children:
            self.count -= sum(1 for child in _walk(node) if child is not node and child.flags)
        node.children = None

    def _touch(self, now: float) -> None:
        if self.oldest_change_at is None:
            self.oldest_change_at = now
        if self.first_change_at is None:
            self.first_change_at = now

    @property
    def oldest_unsent_at(self) -> float | None:
        """When the oldest change still here was read (a file kept aside: when its writing began);
        None when nothing is pending. The lag is the time since."""
        kept = self.writing.oldest()
        times = [kept[0]] if kept is not None else []
        if self and self.first_change_at is not None:
            times.append(self.first_change_at)
        return min(times) if times else None

    def make_due(self, now: float) -> None:
        """Make what is pending due now, as if its oldest change were ``delay`` old: a full
        sync at once, trigger_paths reached, a warm start's changes."""
        due_now = now - self.delay
        self.oldest_change_at = due_now if self.oldest_change_at is None else min(self.oldest_change_at, due_now)

    def add(self, change: Change, now: float, seq: int = 0) -> None:
        """Record one change (``seq``: the change sequence that brought it). O(depth), apart
        from freeing what a subsumed subtree held."""
        if self.writing or change.kind in (ChangeKind.WRITING, ChangeKind.CLOSED):
            recorded = self._unclosed(change, now, seq)
            if recorded is None:
                return
            change = recorded
        kind = change.kind
        self._touch(now)
        if self.full_sync_needed:
            if change.kind == ChangeKind.CHANGED and not change.is_dir:
                self._compare(change.path)
            return
        if kind == ChangeKind.MOVED:
            self._add_move(change, now)
        else:
            node = self._node(change.path)
            if node is not None:
                if kind == ChangeKind.CHANGED:
                    added = FLAG_DIR_METADATA if change.is_dir else FLAG_CHANGED
                    self._set_flags(node, (node.flags & ~FLAG_REMOVED) | added)
                elif kind == ChangeKind.NEW_DIR:
                    self._drop_children(node)
                    self._set_flags(node, FLAG_NEW_DIR)
                elif kind == ChangeKind.REMOVED:
                    self._drop_children(node)
                    self._set_flags(node, FLAG_REMOVED)
                elif kind == ChangeKind.ENTRIES and not node.flags & FLAG_REMOVED:
                    self._set_flags(node, node.flags | FLAG_ENTRIES)  # a removal stays one
        if self.count > self.full_sync_threshold:
            self.request_full_sync()

    def _unclosed(self, change: Change, now: float, seq: int) -> Change | None:
        """Keep aside a file being written, and let a change that ends its writing (a close,
        a removal, a rename) release it; return what the pending tree must record, if anything."""
        kind, path = change.kind, change.path
        if kind == ChangeKind.WRITING:
            if path in self.writing:
                return None
            node = None if self.full_sync_needed else self._node(path, create=False)
            crowded = len(self.writing) >= self.full_sync_threshold  # then the threshold counts it
            if (node is not None and node.flags) or self._subsumed(path) or crowded:
                return Change(ChangeKind.CHANGED, path)  # it is sent anyway
            self.writing.keep(path, now, seq)
            return None
        if kind == ChangeKind.CLOSED:
            self.writing.drop(path, is_dir=False)
            return Change(ChangeKind.CHANGED, path)
        if kind == ChangeKind.CHANGED and not change.is_dir:
            return None if path in self.writing else change  # its metadata goes with its content
        if kind == ChangeKind.MOVED:
            # What was being written under the old name is released under it, so the pending
            # tree carries it to the new name; what the rename replaced is gone.
            for held in self.writing.drop(change.old_path, change.is_dir):
                self.add(Change(ChangeKind.CHANGED, held), now)
            self.writing.drop(change.path, change.is_dir)
        elif kind in (ChangeKind.REMOVED, ChangeKind.NEW_DIR):
            self.writing.drop(path, change.is_dir)  # gone, or sent whole with its directory
        return change

    def release_writing(self, now: float, expired_only: bool = False) -> None:
        """Stop keeping aside the files being written (only those kept for hold_limit), to
        send them as they are: on a sync barrier, at stop, when their time is up."""
        for path in self.writing.take_expired(now, self.hold_limit if expired_only else None):  # as deadline()
            self.add(Change(ChangeKind.CHANGED, path), now)

    def is_changed(self, path: str) -> bool:
        """True when ``path`` is pending as a changed file already, or kept aside while it is
        being written (another event adds nothing)."""
        if path in self.writing:
            return True
        node = self._node(path, create=False)
        return node is not None and node.flags & (FLAG_CHANGED | FLAG_REMOVED) == FLAG_CHANGED

    def _subsumed(self, path: str) -> bool:
        """True when a new or removed directory above ``path`` already covers it."""
        node = self._root
        for name in path.split("/")[:-1]:
            if node.children is None or name not in node.children:
                return False
            node = node.children[name]
            if node.flags & (FLAG_NEW_DIR | FLAG_REMOVED):
                return True
        return False

    def _add_move(self, change: Change, now: float) -> None:
        if self._subsumed(change.old_path):
            # The old name lies in a directory that is new or gone at the destination: nothing
            # there can be renamed; send the new name whole.
            kind = ChangeKind.NEW_DIR if change.is_dir else ChangeKind.CHANGED
            self.add(Change(kind, change.path, change.is_dir), now)
            self.add(Change(ChangeKind.REMOVED, change.old_path, change.is_dir), now)
            return
        old_parent_path, _, old_name = change.old_path.rpartition("/")
        old_parent = self._node(old_parent_path, create=False)
        moved: _Node | None = None
        if old_parent is not None and old_parent.children:
            moved = old_parent.children.pop(old_name, None)
        if moved is not None:
            self.count -= sum(1 for child in _walk(moved) if child.flags)
        else:
            moved = _Node("", None)
        # The old name is gone from the source (unless something replaces it later).
        old_node = self._node(change.old_path)
        if old_node is not None:
            self._drop_children(old_node)
            self._set_flags(old_node, FLAG_REMOVED)
        new_parent_path, _, new_name = change.path.rpartition("/")
        new_parent = self._node(new_parent_path)
        if new_parent is None:
            return  # lands inside a new directory, which is sent whole anyway
        if new_parent.children is None:
            new_parent.children = {}
        replaced = new_parent.children.get(new_name)
        if replaced is not None:
            self.count -= sum(1 for child in _walk(replaced) if child.flags)
        moved.name, moved.parent = new_name, new_parent
        new_parent.children[new_name] = moved
        self.count += sum(1 for child in _walk(moved) if child.flags)
        if moved.flags & (FLAG_NEW_DIR | FLAG_CHANGED):
            return  # its content is sent anyway: renaming the old copy first gains nothing
        self._set_flags(moved, moved.flags | FLAG_MOVED)
        last = self.moves[-1] if self.moves else None
        if last is not None and last.new_path == change.old_path and last.is_dir == change.is_dir:
            self.moves[-1] = Move(last.old_path, change.path, change.is_dir)  # a -> b -> c is a -> c
        else:
            self.moves.append(Move(change.old_path, change.path, change.is_dir))
        if len(self.moves) > self.full_sync_threshold:
            self.request_full_sync()

    def _compare(self, path: str) -> None:
        if len(self.compare_after_full) < self.full_sync_threshold:
            self.compare_after_full.add(path)

    def request_full_sync(self, now: float | None = None) -> None:
        """Forget the individual paths but the changed files: the next sync sends everything
        (with ``now``: a change read now, due ``delay`` later at the latest)."""
        if now is not None:
            self._touch(now)
        if not self.full_sync_needed:
            for path, node in _paths(self._root):
                if node.flags & FLAG_CHANGED and not node.children:
                    self._compare(path)
        self.full_sync_needed = True
        self._root = _Node("", None)
        self.count = 0
        self.moves = []

    # -- sending -----------------------------------------------------------
    def deadline(self) -> float | None:
        """When the pending changes should be sent, or None when nothing is pending: ``delay``
        after the oldest was read (files kept aside: hold_limit after their writing began)."""
        due: float | None = None
        if self.full_sync_needed or self.count > 0 or self.moves:
            due = 0.0 if self.oldest_change_at is None else self.oldest_change_at + self.delay
        kept = self.writing.oldest()
        if kept is not None:
            since, _seq = kept
            due = since + self.hold_limit if due is None else min(due, since + self.hold_limit)
        return due

    def take(self, change_seq: int = 0, now: float | None = None) -> Batch:
        """Empty the pending set into a Batch (with ``now``: and the files kept aside for
        hold_limit). A file still kept aside stays; the batch then covers only the change
        sequences before the one that brought it."""
        if now is not None:
            self.release_writing(now, expired_only=True)
        kept = self.writing.oldest()
        if kept is not None:
            change_seq = min(change_seq, kept[1] - 1)
        batch = Batch(full=self.full_sync_needed, change_seq=change_seq, first_change_at=self.first_change_at)
        if batch.full:
            batch.changed = sorted(self.compare_after_full)
        else:
            batch.moves = self.moves
            for path, node in _paths(self._root):
                if node.flags & FLAG_NEW_DIR:
                    batch.new_dirs.append(path)
                elif node.flags & FLAG_REMOVED:
                    batch.removed.append(path)
                elif node.flags & FLAG_CHANGED:
                    batch.changed.append(path)
                elif node.flags & FLAG_MOVED:
                    batch.moved_paths.append(path)
                elif node.flags & FLAG_DIR_METADATA:
                    batch.directories.append(path)
                if node.flags & FLAG_ENTRIES and not node.flags & (FLAG_NEW_DIR | FLAG_REMOVED):
                    batch.entries.append(path)
        self._reset()
        return batch

    def put_back(self, batch: Batch, now: float, is_dir: Callable[[str], bool | None] | None = None) -> None:
        """Return a batch that did not make it, so nothing is forgotten. ``is_dir`` tells what
        a path is now: True a directory, False something else, None gone (a removed
        directory subsumes what is below it); without it, paths are taken as listed."""
        if batch.full:
            self.request_full_sync()
            for path in batch.changed:
                self._compare(path)
            self._touch(now)
            self._keep_first_change(batch)
            return

        for path in batch.covered_paths():  # not sent: it goes as it is now (and again at its close)
            self.writing.drop(path, is_dir=True)

        def again(path: str, as_directory_metadata: bool = False) -> None:
            kind = is_dir(path) if is_dir is not None else (path in new_dirs or as_directory_metadata)
            if kind is None:
                self.add(Change(ChangeKind.REMOVED, path, True), now)
            elif kind and path in new_dirs:
                self.add(Change(ChangeKind.NEW_DIR, path, True), now)
            else:  # a changed path that is a directory now is sent whole (-r), as it was listed
                self.add(Change(ChangeKind.CHANGED, path, as_directory_metadata and kind), now)

        new_dirs = {*batch.new_dirs, *batch.moved_paths, *(move.new_path for move in batch.moves if move.is_dir)}
        for path in [*batch.changed, *batch.removed, *batch.new_dirs, *batch.moved_paths]:
            again(path)
        for path in batch.directories:
            again(path, as_directory_metadata=True)
        for path in batch.entries:
            gone = is_dir is not None and is_dir(path) is not True
            self.add(Change(ChangeKind.REMOVED if gone else ChangeKind.ENTRIES, path, True), now)
        for move in batch.moves:
            # Renames not replayed at the destination: send both ends instead.
            self.add(Change(ChangeKind.REMOVED, move.old_path, move.is_dir), now)
            again(move.new_path)
        self._stale_renames({*batch.changed, *batch.new_dirs, *batch.moved_paths}, now)
        self._keep_first_change(batch)

    def stale_at_destination(self, gone: list[str], now: float) -> None:
        """Files known to have changed that a full sync could not send, gone from the source
        since (renamed while it ran): the destination's copies are stale, so a pending rename
        of one sends the new name in full. (A rename read later is not caught: see the README.)"""
        if gone:
            self._stale_renames(set(gone), now)

    def _stale_renames(self, unsent: set[str], now: float) -> None:
        """Pending renames of paths not sent: the destination's copy under the old name is stale,
        so the new name is sent in full, not just renamed. A rename of a directory holding an
        unsent path carries that path to its new name (and on, through later renames)."""
        stale = sorted(unsent)
        for move in self.moves:
            components = move.old_path.split("/")
            if any("/".join(components[:depth]) in unsent for depth in range(1, len(components) + 1)):
                kind = ChangeKind.NEW_DIR if move.is_dir else ChangeKind.CHANGED
                self.add(Change(kind, move.new_path, move.is_dir), now)
                self._carry(stale, unsent, move.new_path)
                continue
            if not move.is_dir:
                continue
            prefix = move.old_path + "/"
            below = []
            for path in stale[bisect.bisect_left(stale, prefix):]:
                if not path.startswith(prefix):
                    break
                below.append(path)
            for path in below:
                moved = move.new_path + path[len(move.old_path):]
                self.add(Change(ChangeKind.CHANGED, moved), now)
                self._carry(stale, unsent, moved)

    @staticmethod
    def _carry(stale: list[str], unsent: set[str], path: str) -> None:
        """``path`` is stale at the destination too (for the renames that follow)."""
        if path not in unsent:
            unsent.add(path)
            bisect.insort(stale, path)

    def _keep_first_change(self, batch: Batch) -> None:
        """A batch put back is as old as its oldest change, not as the moment it came back."""
        if batch.first_change_at is not None and self:
            self.first_change_at = min(batch.first_change_at, self.first_change_at or batch.first_change_at)


def _walk(node: _Node) -> Iterator[_Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if current.children:
            stack.extend(current.children.values())


def _paths(root: _Node) -> Iterator[tuple[str, _Node]]:
    """Every flagged node with its relative path ('.' for the root), parents first."""
    if root.flags:
        yield ".", root
    stack: list[tuple[str, _Node]] = [(name, child) for name, child in (root.children or {}).items()]
    while stack:
        path, node = stack.pop()
        if node.flags:
            yield path, node
        if node.children:
            stack.extend((f"{path}/{name}", child) for name, child in node.children.items())
