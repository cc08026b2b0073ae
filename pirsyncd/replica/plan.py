"""From a batch and facts about the source to the rsync runs that send it (pure: the
source is only looked at, through :class:`SourceFacts`, and nothing is changed).

    renames replayed? ─> CHANGES (changed files, new directories; byte for byte)
                      ─> VERIFY (renamed paths, quick check) ─> DELETIONS (each deleted
                         path's parent, its own entries) ─> DIRECTORIES (metadata only)

Renaming at the destination is a step of running a job, before the transfers are
planned: what it managed decides what must be sent.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable
from typing import Protocol

from pirsyncd.config.destination import DestinationKind
from pirsyncd.replica.batch import Batch, Move
from pirsyncd.replica.rsync import RunMode


class Facts(Protocol):
    def kind(self, path: str) -> bool | None: ...


class SourceFacts:
    """What a path of the source is now, by lstat, each asked once.

    ``kind(path)`` is True for a directory, False for anything else, None when gone. A path
    below anything but a directory is gone, also when lstat would find it through a symlink
    (lstat follows symlinks in every component but the last): ``link/x`` with ``link -> real``
    is not the source's ``real/x``, and sending it would make ``link`` a directory at the
    destination. Tests can pass any object with the same ``kind`` method.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._kinds: dict[str, bool | None] = {"": True, ".": True}

    def kind(self, path: str) -> bool | None:
        if path in self._kinds:
            return self._kinds[path]
        # From the nearest ancestor already known down to the path, each level lstat'ed once.
        unknown = [path]
        while (parent := os.path.dirname(unknown[-1])) not in self._kinds:
            unknown.append(parent)
        answer = self._kinds[parent]
        for level in reversed(unknown):
            if answer is True:
                try:
                    answer = stat.S_ISDIR(os.lstat(os.path.join(self.root, level)).st_mode)
                except OSError:
                    answer = None
            else:
                answer = None
            self._kinds[level] = answer
        return answer


@dataclasses.dataclass(frozen=True)
class Transfer:
    """One rsync run: its mode and the paths it is given (for DELETIONS: the deleted
    paths; their parents are found just before the run, see :func:`deletion_parents`)."""

    mode: RunMode
    paths: tuple[str, ...]
    own_entries: tuple[str, ...] = ()  # DELETIONS: directories whose own entries are checked too


@dataclasses.dataclass(frozen=True)
class Renames:
    """What replaying the batch's renames at the destination achieved."""

    renamed: frozenset[str] = frozenset()  # new names now in place there (quick check them)
    renamed_away: frozenset[str] = frozenset()  # old names no longer there (no deletion needed)
    not_renamed: tuple[Move, ...] = ()  # send these whole instead


def renames_assumed(moves: Iterable[Move], kind: DestinationKind) -> Renames:
    """Before a remote rename has run (ssh) or where none can run (rsync daemon).

    Over ssh every rename is assumed done and then verified by the quick check, which
    sends whatever did not work out; an rsync daemon cannot rename, so all are sent.
    """
    moves = tuple(moves)
    if kind == DestinationKind.SSH:
        return combine_renames([(move, True) for move in moves], record_old_names=False)
    return Renames(not_renamed=moves)


def combine_renames(results: Iterable[tuple[Move, bool]], record_old_names: bool = True) -> Renames:
    """Fold renames done in order (a -> b then b -> c leaves c renamed, not b)."""
    renamed: set[str] = set()
    renamed_away: set[str] = set()
    not_renamed: list[Move] = []
    for move, done in results:
        if done:
            renamed.add(move.new_path)
            renamed.discard(move.old_path)
            if record_old_names:
                renamed_away.add(move.old_path)
        else:
            renamed.discard(move.new_path)
            not_renamed.append(move)
    return Renames(frozenset(renamed), frozenset(renamed_away), tuple(not_renamed))


def plan_transfers(batch: Batch, facts: Facts, renames: Renames, *, delete_missing_args: bool,
                   linked_names: Iterable[str] = ()) -> list[Transfer]:
    """The rsync runs for a (not full) batch, in order.

    >>> batch = Batch(changed=["a"], removed=["b"])
    >>> class Present:
    ...     def kind(self, path): return None if path == "b" else False
    >>> [(t.mode.value, t.paths) for t in plan_transfers(batch, Present(), Renames(), delete_missing_args=False)]
    [('changes', ('a',)), ('deletions', ('b',))]
    """
    changed = [*batch.changed, *linked_names]
    new_dirs = list(batch.new_dirs)
    verify = [path for path in batch.moved_paths if path in renames.renamed]
    new_dirs += [path for path in batch.moved_paths if path not in renames.renamed]
    for move in renames.not_renamed:
        (new_dirs if move.is_dir else changed).append(move.new_path)
    # An old name renamed away at the destination needs no deletion (unless it is back).
    removed = [path for path in batch.removed if path not in renames.renamed_away or facts.kind(path) is not None]
    changed = [path for path in changed if path not in renames.renamed_away or facts.kind(path) is not None]
    deleted: list[str] = []
    if delete_missing_args:
        send, new_dirs = without_missing_parents(facts, changed + removed, new_dirs)
    else:
        # Paths gone from the source are deleted by re-checking their parents' own entries.
        send = [path for path in changed + removed if facts.kind(path) is not None]
        deleted = [path for path in changed + removed + new_dirs if not facts.kind(path) is not None]
        new_dirs = [path for path in new_dirs if facts.kind(path) is not None]
    transfers: list[Transfer] = []
    if send or new_dirs:
        transfers.append(Transfer(RunMode.CHANGES, tuple(dict.fromkeys(send + new_dirs))))
    if verify:
        transfers.append(Transfer(RunMode.VERIFY, tuple(sorted(set(verify)))))
    if deleted or batch.entries:
        transfers.append(Transfer(RunMode.DELETIONS, tuple(deleted), tuple(batch.entries)))
    if batch.directories:
        transfers.append(Transfer(RunMode.DIRECTORIES, tuple(batch.directories)))
    return transfers


def deletion_parents(facts: Facts, deleted: Iterable[str], new_dirs: Iterable[str] = (),
                     own_entries: Iterable[str] = ()) -> list[str]:
    """The nearest existing directory above each deleted path, and each directory of
    ``own_entries`` that still is one, once each, sorted; none that lies in a new directory
    sent whole (that run deletes there already).

    A directory is one by lstat (a symlink to a directory is not), so rsync is never
    given a path it cannot list: that would make it skip every deletion of the run.
    """
    sent_whole = set(new_dirs)
    parents: set[str] = set()
    checked = [f"{path}/." for path in own_entries if path in ("", ".") or facts.kind(path) is True]
    for path in [*deleted, *checked]:
        parent = os.path.dirname(path)
        while parent and parent != "." and facts.kind(parent) is not True:
            parent = os.path.dirname(parent)
        parent = "" if parent == "." else parent
        components = parent.split("/") if parent else []
        if any("/".join(components[:depth]) in sent_whole for depth in range(1, len(components) + 1)):
            continue
        parents.add(parent or ".")
    return sorted(parents)


def without_missing_parents(facts: Facts, changed: list[str], new_dirs: list[str]) -> tuple[list[str], list[str]]:
    """Replace paths whose parent directory is gone from the source by their topmost
    missing ancestor: rsync reports a missing implied directory as 'vanished' (24)
    instead of deleting it, while the ancestor itself is deleted as a missing argument."""

    def fix(path: str) -> tuple[str, bool]:
        if facts.kind(os.path.dirname(path)) is True:
            return path, False
        components = path.split("/")
        for depth in range(1, len(components)):
            if facts.kind("/".join(components[:depth])) is not True:
                return "/".join(components[:depth]), True
        return path, False

    fixed_changed: list[str] = []
    fixed_new: list[str] = []
    for paths, target in ((changed, fixed_changed), (new_dirs, fixed_new)):
        for path in paths:
            replacement, moved_up = fix(path)
            (fixed_changed if moved_up else target).append(replacement)
    return fixed_changed, fixed_new
