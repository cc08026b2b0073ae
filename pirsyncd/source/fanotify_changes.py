"""Turn decoded fanotify events into the same changes the inotify side makes (pure: the paths
of directory handles and the state of a path on disk are asked of callables).

A filesystem mark reports the whole file system, each entry as (parent directory's handle,
name). :class:`FanotifyTranslator` makes that a path below the source, or drops the event
(outside the source, or in a directory deleted since: its own deletion is reported by its
parent). What differs from inotify, and how it is met:

- **Merged events.** The kernel merges queued events of one name into one mask, so a create
  and a delete arrive together with their order lost. Such an event is judged by the path's
  state on disk: there (as the same kind of object) it was created, else it is removed — and
  a rename of that name read later is told as a removal and a move in from outside. (A
  change of a file that is gone by the time it is sent is judged again by the plan.)
- **Late resolution.** A handle is resolved when its event is read, so a directory renamed
  since resolves to where it is now, not where it was when the event was queued. The resolver
  caches answers and forgets them at each directory rename and deletion, in kernel order;
  a directory rename to a path below which answers were already given (so some events before
  it were placed at its new path) is sent whole — the old path removed, the new one a new
  directory — instead of replayed as a rename, so that no replay can meet a path that
  existed only in the future.
- **No per-directory watch.** A new directory is sent whole (NEW_DIR) as with inotify, but
  nothing has to be watched: events inside it were never missed.
- **Overflow** is a RESCAN, and so is an event whose directory the kernel could not resolve
  (not stale: ENOMEM, seen under churn, after a few tries). The source's deletion or rename,
  of it or of a directory above it, is ROOT_LOST; so is its file system's unmount, which
  fanotify does not report: the caller hands the mount table over when it changes
  (:meth:`FanotifyTranslator.mount_table_changed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from pirsyncd.source.events import Change, ChangeKind
from pirsyncd.source.fanotify_events import (
    FAN_ATTRIB,
    FAN_CLOSE_WRITE,
    FAN_CREATE,
    FAN_DELETE,
    FAN_DELETE_SELF,
    FAN_MODIFY,
    FAN_MOVE_SELF,
    UNRESOLVABLE,
    Entry,
    FanotifyEvent,
    FileHandle,
    Gone,
)
from pirsyncd.source.mounts import Mount, mount_of


class Resolver(Protocol):
    """Directory handles made into absolute paths (:class:`pirsyncd.source.fanotify_paths.HandleResolver`)."""

    def resolve(self, handle: FileHandle) -> str | Gone: ...

    def forget_below(self, path: str) -> None: ...

    def answered_below(self, path: str) -> bool: ...


# At most this many paths in FanotifyTranslator.merged_away (a bound, not an expected size).
MERGED_AWAY_LIMIT = 10_000
# Whether a path is a directory on disk now (True), another kind of object (False) or absent (None).
IsDirOnDisk = Callable[[str], bool | None]


class FanotifyTranslator:
    """Feed it events in kernel order; it returns Changes with paths relative to ``source``.

    ``source`` is the source's real path; ``root_handle`` its handle (the type and bytes
    ``name_to_handle_at`` gives), which tells its own self events apart; ``source_mount`` the
    mount it lies on at the start. ``outside`` and ``stale`` count the events dropped.
    """

    def __init__(self, source: str, root_handle: tuple[int, bytes], resolver: Resolver,
                 is_dir_on_disk: IsDirOnDisk, source_mount: Mount | None = None) -> None:
        self.source = source.rstrip("/") or "/"
        self.root_handle = root_handle
        self.resolver = resolver
        self.is_dir_on_disk = is_dir_on_disk
        self.source_mount = source_mount
        self.outside = 0  # events about paths outside the source
        # Paths removed by a merged create-and-delete, whose rename may still be on its way.
        self.merged_away: set[str] = set()
        self.stale = 0  # events in directories deleted since (or that the source's mount does not reach)
        self.lost_track = False  # an event's directory could not be resolved (this feed)
        self.away_from_mount = False  # the source is off source_mount (its loss told already)

    def feed(self, events: Iterable[FanotifyEvent]) -> list[Change]:
        changes: list[Change] = []
        for event in events:
            changes.extend(self._translate(event))
        if self.lost_track:
            # An event whose directory could not be found: where it happened is unknown.
            self.lost_track = False
            changes.append(Change(ChangeKind.RESCAN))
        return changes

    def mount_table_changed(self, table: list[Mount]) -> list[Change]:
        """ROOT_LOST when the source no longer lies on the mount it lay on at the start (its
        file system was unmounted, or another was mounted over it or above it) — once, when it
        leaves it: the table changes with every mount anywhere on the machine, and a loss told
        again at each would put off the re-check that finds the source back (each loss starts
        its wait afresh), for as long as mounts come and go elsewhere."""
        if self.source_mount is None:
            return []
        away = mount_of(self.source, table) != self.source_mount
        news, self.away_from_mount = away and not self.away_from_mount, away
        return [Change(ChangeKind.ROOT_LOST)] if news else []

    # -- paths --------------------------------------------------------------------------------
    def _absolute(self, entry: Entry) -> str | None:
        """The absolute path an entry names now; None when its directory is gone. A directory
        the kernel could not resolve at all asks for a full sync (:attr:`lost_track`)."""
        directory = self.resolver.resolve(entry.directory)
        if isinstance(directory, Gone):
            if directory.reason == UNRESOLVABLE:
                self.lost_track = True
            return None
        if entry.name in ("", "."):
            return directory
        return f"{directory.rstrip('/')}/{entry.name}"

    def _relative(self, absolute: str) -> str | None:
        """The path below the source ('' for the source itself); None outside it."""
        if absolute == self.source:
            return ""
        prefix = self.source if self.source == "/" else self.source + "/"
        return absolute[len(prefix):] if absolute.startswith(prefix) else None

    def _above_or_is_source(self, absolute: str) -> bool:
        return absolute == self.source or self.source.startswith(absolute.rstrip("/") + "/")

    def _is_root(self, handle: FileHandle) -> bool:
        return (handle.handle_type, handle.handle) == self.root_handle

    # -- events -------------------------------------------------------------------------------
    def _translate(self, event: FanotifyEvent) -> tuple[Change, ...]:
        if event.overflow:
            return (Change(ChangeKind.RESCAN),)
        if event.old is not None and event.new is not None:
            return self._rename(event, event.old, event.new)
        entry = event.entry
        if entry is None:
            return ()  # a file's own event with no name left (unlinked): its parent told it
        if entry.name == ".":
            return self._self_event(event, entry.directory)
        absolute = self._absolute(entry)
        if absolute is None:
            self.stale += 1
            return ()
        if event.mask & FAN_DELETE and event.is_dir:
            self.resolver.forget_below(absolute)
        if self._above_or_is_source(absolute):
            return (Change(ChangeKind.ROOT_LOST),) if event.mask & FAN_DELETE and absolute == self.source else ()
        relative = self._relative(absolute)
        if relative is None:
            self.outside += 1
            return ()
        return self._entry_change(event, relative, absolute)

    def _self_event(self, event: FanotifyEvent, directory: FileHandle) -> tuple[Change, ...]:
        """An event of a directory itself: the root's deletion or move, or an attribute change."""
        if self._is_root(directory):
            if event.mask & (FAN_DELETE_SELF | FAN_MOVE_SELF):
                return (Change(ChangeKind.ROOT_LOST),)
            return (Change(ChangeKind.CHANGED, ".", True),) if event.mask & FAN_ATTRIB else ()
        if not event.mask & FAN_ATTRIB or event.mask & FAN_DELETE_SELF:
            return ()  # deleted or moved: its parent's event says so
        absolute = self.resolver.resolve(directory)
        if isinstance(absolute, Gone):
            self.stale += 1
            self.lost_track = self.lost_track or absolute.reason == UNRESOLVABLE
            return ()
        relative = self._relative(absolute)
        if relative is None:
            self.outside += 1
            return ()
        return (Change(ChangeKind.CHANGED, relative or ".", True),)

    def _entry_change(self, event: FanotifyEvent, path: str, absolute: str) -> tuple[Change, ...]:
        """A name's (possibly merged) events, judged by what is at the path now where the
        order was lost (a create and a delete in one mask)."""
        mask, is_dir = event.mask, event.is_dir
        if mask & FAN_DELETE:
            if not mask & FAN_CREATE:
                return (Change(ChangeKind.REMOVED, path, is_dir),)
            if self.is_dir_on_disk(absolute) != is_dir:
                # Created and deleted, in an order lost, and not there now: gone. Had it been
                # created last and renamed since, that rename must not carry this removal to
                # the new name: it is told as a move from outside (see _rename).
                if len(self.merged_away) >= MERGED_AWAY_LIMIT:
                    self.merged_away.clear()
                self.merged_away.add(path)
                return (Change(ChangeKind.REMOVED, path, is_dir),)
            # Deleted and created again: what is there now is new.
        if mask & FAN_CREATE:
            self.merged_away.discard(path)
        if is_dir:
            if mask & (FAN_CREATE | FAN_DELETE):
                return (Change(ChangeKind.NEW_DIR, path, True),)
            return (Change(ChangeKind.CHANGED, path, True),) if mask & FAN_ATTRIB else ()
        if mask & FAN_CLOSE_WRITE:
            return (Change(ChangeKind.CLOSED, path),)
        if mask & (FAN_CREATE | FAN_MODIFY | FAN_DELETE):
            # Being written (or a symlink, hard link or device node: the intake tells them apart).
            return (Change(ChangeKind.WRITING, path),)
        if mask & FAN_ATTRIB:
            return (Change(ChangeKind.CHANGED, path),)
        return ()

    def _rename(self, event: FanotifyEvent, old: Entry, new: Entry) -> tuple[Change, ...]:
        """A FAN_RENAME: a move within the source, into it, or out of it."""
        is_dir = event.is_dir
        old_absolute, new_absolute = self._absolute(old), self._absolute(new)
        whole = False
        if is_dir and old_absolute is not None:
            self.resolver.forget_below(old_absolute)
            if self._above_or_is_source(old_absolute):
                return (Change(ChangeKind.ROOT_LOST),)
        if is_dir and new_absolute is not None:
            # Answers below the new path were given before this rename was read: events queued
            # before it were placed there, in the future. Sending it whole makes them right.
            whole = self.resolver.answered_below(new_absolute)
        old_path = None if old_absolute is None else self._relative(old_absolute)
        new_path = None if new_absolute is None else self._relative(new_absolute)
        if old_path is None and new_path is None:
            if old_absolute is None or new_absolute is None:
                self.stale += 1
            else:
                self.outside += 1
        if old_path is not None and old_path in self.merged_away:
            self.merged_away.discard(old_path)
            whole = True  # its removal is told already; what moved was created after it
        if old_path is not None and new_path is not None and not whole:
            return (Change(ChangeKind.MOVED, new_path, is_dir, old_path),)
        changes = []
        if old_path is not None:
            changes.append(Change(ChangeKind.REMOVED, old_path, is_dir))
        if new_path is not None:
            # Moved in from outside (or sent whole): complete as it is.
            changes.append(Change(ChangeKind.NEW_DIR if is_dir else ChangeKind.CLOSED, new_path, is_dir))
        return tuple(changes)
