"""The source side, one per instance: the watcher, the intake of changes (excludes,
hard-link inodes) and the source's identity. It produces changes and knows nothing of
destinations.

    inotify  ─> Watcher ──────────┐
    fanotify ─> FanotifyWatcher ──┴─> Intake: excluded paths dropped or rewritten, multi-link
                    │                 inodes noted, overflow / root lost flagged ─> replicas
                    └─> DirectoryIndex (the warm restart's tree of directories: no watch)

Which watcher (``watch_backend``) is :mod:`pirsyncd.source.backend`'s choice, made at each
(re)watch.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import stat
from collections.abc import Callable

from pirsyncd.config import exitcodes
from pirsyncd.config.filters import Excluder
from pirsyncd.edges.loop import Loop
from pirsyncd.source import capabilities
from pirsyncd.source.backend import FANOTIFY, INOTIFY, BackendChoice, choose_backend
from pirsyncd.source.dirindex import DirectoryIndex
from pirsyncd.source.events import Change, ChangeKind, WatchTree
from pirsyncd.source.fanotify_watcher import FanotifyWatcher
from pirsyncd.source.hardlinks import HardLinkIndex, Key
from pirsyncd.source.identity import (
    SourceIdentity,
    SourceProblem,
    describe_identity_change,
    inspect_source,
    source_identity,
    wipe_refusal,
)
from pirsyncd.source.watcher import Watcher
from pirsyncd.source.watchlimit import limit_message

log = logging.getLogger("pirsyncd")

# Changes of a file's content or metadata (a file being written, closed, or changed otherwise).
FILE_CHANGES = (ChangeKind.CHANGED, ChangeKind.WRITING, ChangeKind.CLOSED)


@dataclasses.dataclass
class Intake:
    """What one read of the inotify queue brought."""

    changes: list[Change] = dataclasses.field(default_factory=list)
    changed_inodes: set[Key] = dataclasses.field(default_factory=set)
    overflow: bool = False  # events were lost: a full sync, and the watches rebuilt
    root_lost: bool = False
    newly_unwatched: bool = False  # directories that could not be watched appeared
    oldest_ctime_ns: int | None = None  # of the changed files looked at (a late event: mmap, a long write)


class SourceSide:
    """The source as the instance sees it: its watcher (inotify or fanotify), its identity,
    the mounts below it, the tree walks, the change sequence and sync barriers, and what it
    reads, made into changes for the replicas (:meth:`read`)."""

    def __init__(self, source: str, exclude: tuple[str, ...], debug_events: bool = False,
                 previous: SourceSide | None = None, one_file_system: bool = False,
                 watch_backend: str = INOTIFY) -> None:
        """``previous``: the side this one replaces (a reload); its counts go on, since a change
        sequence that went back would satisfy every sync barrier at once. ``watch_backend``:
        inotify, fanotify or auto (the option)."""
        self.source = source
        self.excluder = Excluder(exclude)
        self.debug_events = debug_events
        self.one_file_system = one_file_system
        self.watch_backend = watch_backend
        self.backend = BackendChoice(INOTIFY)  # what watches now (and why, when auto fell back)
        self.attempted = self.backend  # what the last watch() tried, whether it worked or not
        self._mount_table_changed = False
        self.watcher: Watcher | FanotifyWatcher | None = None
        # With fanotify, the directories by inode for the restart state (built once asked for).
        self.index: DirectoryIndex | None = None
        self.identity: SourceIdentity | None = None
        self.hard_links = HardLinkIndex(source)
        self.change_seq = 0  # counts reads that brought changes: what `pirsyncd wait` waits for
        self.barrier_requests = 0
        self.barrier_seq = 0
        # CAP_SYS_ADMIN given up once a fanotify mark was placed (pirsyncd.source.capabilities):
        # a new mark cannot be placed by this process.
        self.mark_privilege_given_up = False
        self._replaced: Watcher | FanotifyWatcher | None = None  # the previous side's, until watched
        if previous is not None:
            self.change_seq, self.barrier_requests = previous.change_seq, previous.barrier_requests
            self.barrier_seq = previous.barrier_seq
            self.mark_privilege_given_up, self._replaced = previous.mark_privilege_given_up, previous.watcher
        self._unwatched_seen = 0
        self.limit_reported = False
        self._limit_warning = ""

    # -- watching --------------------------------------------------------------------
    def watch(self, expected: SourceIdentity | None = None, at_once: bool = False) -> None:
        """(Re)build every watch; the old watcher stays if the new one fails (OSError, or
        SourceProblem when the source is not ``expected``, the directory watched before).
        The root is watched now, what is below it by :meth:`walk_step` while :attr:`walking`
        (``at_once``: before this returns, as at start). With fanotify, one mark and no walk:
        the mark of the watcher this one replaces is kept while it covers the source's file
        system (after an overflow, a reload); once placed, a worker granted CAP_SYS_ADMIN for it
        gives that up (:mod:`pirsyncd.source.capabilities`), so a new one is NewMarkNeeded (a
        SourceProblem). BackendUnavailable (a SourceProblem too) when watch_backend = fanotify
        cannot be had."""
        kept = self._mark_to_keep()
        # First: another directory at the source's path is no reason for a new mark (nor for the
        # restart NewMarkNeeded asks for, which would take it for the source).
        identity = source_identity(self.source)
        if expected is not None and not identity.same_directory(expected):
            raise SourceProblem(describe_identity_change(self.source, expected) or "", exitcodes.NO_SOURCE)
        choice = self.attempted = self._choose_backend(kept)
        watcher: Watcher | FanotifyWatcher
        if choice.backend == FANOTIFY:
            watcher = FanotifyWatcher(self.source, self.excluder, self.debug_events, self.one_file_system)
        else:
            watcher = Watcher(self.source, self.excluder, self.debug_events, self.one_file_system)
        try:
            # The walk goes through the root's descriptor, so it stays in the directory checked
            # here; the source's path changing later is the root's watch's news (or moved_away's).
            if isinstance(watcher, FanotifyWatcher):
                watcher.watch_root(walk_all=at_once, keep_mark_of=kept)
            else:
                watcher.watch_root(walk_all=at_once)
            if not source_identity(self.source).same_directory(identity):
                raise SourceProblem(f"the source {self.source} changed while it was being watched",
                                    exitcodes.NO_SOURCE)
        except (OSError, SourceProblem):
            watcher.close()
            raise
        if self.watcher is not None:
            self.watcher.close()
        if self.index is not None:
            self.index.close()
        self.watcher, self.identity, self._replaced = watcher, identity, None
        # After the mark: a directory scanned later cannot change unseen.
        self.index = None if isinstance(watcher, Watcher) else DirectoryIndex(
            self.source, self.excluder, lambda path: watcher.mounts.at(path) is not None)
        self.limit_reported = False
        self._unwatched_seen = len(watcher.unwatched)
        if choice != self.backend and self.watch_backend != INOTIFY:
            if choice.reason is not None:
                log.info("watch_backend = %s: watching with inotify, since %s", self.watch_backend, choice.reason)
            else:
                log.info("watch_backend = %s: watching with fanotify (one filesystem mark, no watch per directory)",
                         self.watch_backend)
            if choice.backend == FANOTIFY and watcher.unwatched:
                log.warning("file systems mounted below the source (%s) are beyond the fanotify mark: they are "
                            "covered by full syncs only (watch_backend = inotify watches them)",
                            ", ".join(sorted(watcher.unwatched)[:5]))
        self.backend = choice
        if choice.backend == FANOTIFY and kept is None:
            self.mark_privilege_given_up = capabilities.give_up_mark_privilege() or self.mark_privilege_given_up

    def _mark_to_keep(self) -> FanotifyWatcher | None:
        """The fanotify watcher (this side's, or the one of the side this one replaces) whose
        mark still covers the source's file system, if any: no new mark is needed."""
        old = self.watcher or self._replaced
        if self.watch_backend != INOTIFY and isinstance(old, FanotifyWatcher) and old.mark_covers(self.source):
            return old
        return None

    def _choose_backend(self, kept: FanotifyWatcher | None) -> BackendChoice:
        """The backend for this watch (the source is there): inotify at once when asked for
        (nothing is probed); else the probe decides; with a mark kept, or the privilege to place
        one given up, the probe (which places one) is not asked, and a new mark needed is
        NewMarkNeeded."""
        if self.watch_backend == INOTIFY:
            return BackendChoice(INOTIFY)
        if kept is None and not self.mark_privilege_given_up:
            return choose_backend(self.watch_backend, self.source, self.one_file_system)
        choice = choose_backend(self.watch_backend, self.source, self.one_file_system, refusal=lambda _source: None)
        if choice.backend == FANOTIFY and kept is None:
            raise capabilities.NewMarkNeeded(self.source)
        return choice

    @property
    def watch_tree(self) -> WatchTree | None:
        """The tree of directories the warm start judges and the restart state's index is made
        of: inotify's watched ones; with fanotify, the directory index once it is complete
        (None before, or when it cannot be trusted)."""
        if isinstance(self.watcher, Watcher):
            return self.watcher.tree
        return self.index.tree if self.index is not None and self.index.complete else None

    @property
    def indexing(self) -> bool:
        """The directory index (fanotify) has scans left: :meth:`walk_step` goes on with them."""
        return self.index is not None and self.index.working

    def build_index(self, at_once: bool = False, seconds: float | None = None) -> None:
        """Begin the directory index (fanotify) unless begun (anew if it was given up), to be
        scanned by :meth:`walk_step`, or (``at_once``) scan on before this returns, until done
        or ``seconds`` passed: a warm start judges the whole tree. OSError when the source
        cannot be opened. Nothing to do with inotify."""
        if self.index is None:
            return
        if not self.index.begun or self.index.unusable is not None:
            self.index.begin()  # (given up: it starts over)
        if at_once:
            self.index.step(seconds=seconds)

    @property
    def index_problem(self) -> str | None:
        """Why the directory index (fanotify) is not there to judge or write, or None."""
        if self.index is None:
            return None
        if self.index.unusable is not None:
            return self.index.unusable
        return None if self.index.complete else "its scan is not done"

    @property
    def unindexed(self) -> set[str]:
        """Directories left out of the directory index below which nothing is known: those
        that could not be listed (a warm start sends them whole)."""
        return set(self.index.unreadable) if self.index is not None else set()

    @property
    def drained(self) -> bool:
        """The last read took every queued event (fanotify reads at most so many at a time)."""
        return not isinstance(self.watcher, FanotifyWatcher) or self.watcher.drained

    def recheck(self, allow_empty: bool, destinations_hold_data: Callable[[], bool]) -> None:
        """Watch the lost source again if it is back: the same directory (whatever else appears
        at its path, an empty mount point, another file system, is not the source until a
        reload says so), and not empty while a destination is not (``destinations_hold_data``
        is asked only of an empty source). SourceProblem or OSError when it is not back."""
        if inspect_source(self.source) and not allow_empty and destinations_hold_data():
            raise wipe_refusal(self.source)
        self.watch(expected=self.identity)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self.index is not None:
            self.index.close()

    def listen(self, loop: Loop, on_change: Callable[[], None], old: Watcher | FanotifyWatcher | None = None) -> None:
        """Have the loop call ``on_change`` when the watcher has events or the mount table changed
        (after forgetting ``old``, the watcher this one replaced)."""
        assert self.watcher is not None
        if old is not None:
            loop.forget(old)
            loop.forget(old.mount_table)
        loop.watch_readable(self.watcher, on_change)
        loop.watch_readable(self.watcher.mount_table, functools.partial(self._on_mount_table, on_change))

    def _on_mount_table(self, on_change: Callable[[], None]) -> None:
        # Taking the kernel's notice is what made this descriptor ready: remember it for read().
        self._mount_table_changed = True
        on_change()

    def kept_out(self) -> list[str]:
        """Mount points below the source whose contents stay out of every rsync run."""
        return self.watcher.kept_out() if self.watcher else []

    def fileno(self) -> int:
        assert self.watcher is not None
        return self.watcher.fileno()

    @property
    def watched_count(self) -> int:
        return self.watcher.watched_count if self.watcher else 0

    @property
    def unwatched(self) -> set[str]:
        return self.watcher.unwatched if self.watcher else set()

    @property
    def root_alive(self) -> bool:
        return self.watcher is not None and self.watcher.root_alive

    @property
    def walking(self) -> bool:
        """Directories are still being walked: until they are watched, nothing is sent (a run
        could pass a directory before its watch exists and miss what changes there next) and
        nothing is called in sync."""
        return self.watcher is not None and self.watcher.walking

    def walk_step(self) -> bool:
        """The next bounded step of the walks (or of the directory index's scans); True when it
        found directories that could not be watched (covered by full syncs)."""
        if self.watcher is None:
            return False
        self.watcher.walk_step()
        if self.index is not None:
            self.index.step()
        return self._note_unwatched()

    def moved_away(self) -> str | None:
        """Why the source path no longer leads to the directory watched, or None."""
        return None if self.identity is None else describe_identity_change(self.source, self.identity)

    # -- intake ------------------------------------------------------------------------
    def read(self, is_pending_file: Callable[[str], bool]) -> Intake:
        """Drain the watcher's queue into an Intake. ``is_pending_file(path)`` tells whether a
        path is pending as a changed file already (its inode need not be looked at again)."""
        assert self.watcher is not None
        intake = Intake()
        changes = self.watcher.read_changes()
        if self._mount_table_changed:
            self._mount_table_changed = False
            changes += self.watcher.read_mount_changes()
        if not changes:
            return intake
        if self.index is not None:
            self.index.apply(changes)
        self.change_seq += 1
        for change in changes:
            if change.kind == ChangeKind.RESCAN:
                if self.backend.backend == FANOTIFY:
                    log.warning("the fanotify queue overflowed (fs.fanotify.max_queued_events is too small for "
                                "this burst, on the whole file system), or a directory could not be resolved: "
                                "events were lost, so a full sync follows")
                else:
                    log.warning("the inotify queue overflowed (fs.inotify.max_queued_events is too small for "
                                "this burst): events were lost, so a full sync follows")
                intake.overflow = True
                continue
            if change.kind == ChangeKind.ROOT_LOST:
                intake.root_lost = True
                continue
            kept = self._filter(change)
            if kept is None:
                continue
            if kept.kind in FILE_CHANGES and not kept.is_dir and not is_pending_file(kept.path):
                status = self._note_inode(kept.path, intake)
                if kept.kind == ChangeKind.WRITING and not (
                        status is not None and stat.S_ISREG(status.st_mode) and status.st_nlink == 1):
                    # Not a file with one name being written (or gone already): nothing to wait for.
                    kept = Change(ChangeKind.CHANGED, kept.path)
            intake.changes.append(kept)
        intake.newly_unwatched = self._note_unwatched()
        return intake

    def _note_unwatched(self) -> bool:
        """Whether directories that could not be watched appeared since the last look."""
        assert self.watcher is not None
        seen, self._unwatched_seen = self._unwatched_seen, len(self.watcher.unwatched)
        return self._unwatched_seen > seen

    def _filter(self, change: Change) -> Change | None:
        """Drop excluded paths; a rename into or out of an excluded name is a create or a delete."""
        excluder = self.excluder
        if not excluder:
            return change
        if change.old_path and excluder.excludes(change.old_path, change.is_dir):
            change = Change(ChangeKind.NEW_DIR if change.is_dir else ChangeKind.CLOSED, change.path, change.is_dir)
        if excluder.excludes(change.path, change.is_dir):
            if not change.old_path:
                return None
            change = Change(ChangeKind.REMOVED, change.old_path, change.is_dir)
        return change

    def _note_inode(self, path: str, intake: Intake) -> os.stat_result | None:
        # Remember which inode a multi-link file had when it changed: its other names must
        # be sent too, even if this name points elsewhere by the time we send. Once per
        # pending path: its inode only changes through events that reset it. And its ctime:
        # an event that comes long after the change (mmap, a long write) must not find a
        # watermark on disk that already lies past it.
        try:
            status = os.lstat(os.path.join(self.source, path))
        except OSError:
            return None
        if status.st_nlink > 1 and stat.S_ISREG(status.st_mode):
            intake.changed_inodes.add((status.st_dev, status.st_ino))
        if intake.oldest_ctime_ns is None or status.st_ctime_ns < intake.oldest_ctime_ns:
            intake.oldest_ctime_ns = status.st_ctime_ns
        return status

    def barrier(self) -> int:
        """A sync barrier (SIGUSR1): the change sequence every replica must reach."""
        self.barrier_requests += 1
        self.barrier_seq = self.change_seq
        return self.barrier_seq

    # -- unwatched directories ---------------------------------------------------------
    def retry_unwatched(self) -> bool:
        """Try again to watch what could not be; True when everything is watched now."""
        if self.watcher is None or not self.watcher.unwatched:
            return False
        self.watcher.retry_unwatched()
        if not self.watcher.unwatched:
            log.info("every directory is watched again")
            self.limit_reported = False
            return True
        return False

    def watch_again(self, paths: list[str]) -> list[str]:
        """Directories that could not be watched and have just been sent (no longer failing):
        watch them now; return those watched (to be sent whole once more, as new ones are)."""
        if self.watcher is None or not self.watcher.unwatched or not paths:
            return []
        return self.watcher.retry_unwatched(set(paths))

    def limit_warning(self, resync_interval: float) -> str | None:
        """Log the watch-limit message once; return the short warning for the status."""
        if self.watcher is None or not (self.watcher.limit_reached and self.watcher.unwatched):
            return None
        if not self.limit_reported:
            message, self._limit_warning = limit_message(self.source, self.watcher.unwatched, resync_interval)
            self.limit_reported = True
            log.error("%s", message)
        return self._limit_warning
