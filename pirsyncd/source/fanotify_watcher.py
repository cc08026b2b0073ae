"""The source watched through one fanotify filesystem mark instead of a watch per directory:
the fanotify counterpart of :class:`pirsyncd.source.watcher.Watcher`, with its interface (the
intake takes either: ``watch_backend``).

It places the mark at :meth:`FanotifyWatcher.watch_root` (no walk: events anywhere below the
source are reported from then on, also in directories made a moment later), and
:meth:`FanotifyWatcher.read_changes` drains the group's queue into the same Changes the inotify
watcher makes (:mod:`pirsyncd.source.fanotify_changes`). The file system's unmount is not an
event: the mount table, which wakes the loop when it changes, tells it
(:meth:`FanotifyWatcher.read_mount_changes`).
"""

from __future__ import annotations

import logging
import os

from pirsyncd.config.filters import Excluder
from pirsyncd.source.events import Change, ChangeKind
from pirsyncd.source.fanotify import Fanotify, name_to_handle_at
from pirsyncd.source.fanotify_changes import FanotifyTranslator
from pirsyncd.source.fanotify_events import describe_mask, parse_events
from pirsyncd.source.fanotify_paths import HandleResolver, KernelLookup, is_dir_on_disk
from pirsyncd.source.mounts import MOUNTINFO, MountsBelow, MountTable, mount_of, mounts_below, parse_mountinfo

log = logging.getLogger("pirsyncd")
# Reads per read_changes at most (64 KiB each, some 700 events): the rest waits for the next
# turn of the loop, which stays responsive while another writer floods the file system.
MAX_READS = 64


def marked_device(fdinfo_line: str) -> int:
    """The file system (as ``st_dev``) of a filesystem mark's line in a group's fdinfo, which
    gives the kernel's dev_t (major << 20 | minor).

    >>> marked_device("fanotify sdev:fe00001 mflags:0 mask:58000f0e ignored_mask:0") == os.makedev(254, 1)
    True
    """
    kernel_device = int(fdinfo_line.split("sdev:")[1].split()[0], 16)
    return os.makedev(kernel_device >> 20, kernel_device & 0xFFFFF)


class FanotifyWatcher:
    """Watches ``source`` through a fanotify filesystem mark (CAP_SYS_ADMIN, and
    CAP_DAC_READ_SEARCH to resolve handles; check first with
    :func:`pirsyncd.source.fanotify_probe.filesystem_marks_refusal`)."""

    def __init__(self, source: str, excluder: Excluder, debug_events: bool = False,
                 one_file_system: bool = False) -> None:
        self.source = source
        self.excluder = excluder  # the intake drops excluded paths; nothing here needs a walk
        self.debug_events = debug_events
        self.mount_table = MountTable()
        self.mounts = MountsBelow(source, one_file_system)
        self.group: Fanotify | None = None
        self.lookup: KernelLookup | None = None
        self.translator: FanotifyTranslator | None = None
        self.root_lost = False
        self.unwatched: set[str] = set()  # nothing goes unwatched: the interface of the Watcher
        self.limit_reached = False
        self.walking = False
        # The last read_changes emptied the queue (else MAX_READS stopped it: events are left).
        self.drained = True

    def watch_root(self, walk_all: bool = True, keep_mark_of: FanotifyWatcher | None = None) -> None:
        """Place the filesystem mark on the source's file system (``walk_all``: there is no
        walk); or, with ``keep_mark_of`` (the watcher this one replaces, whose mark still covers
        the source: :meth:`mark_covers`), take over its group and mark, which needs no privilege
        and keeps what is queued; the handles are resolved afresh either way (after an overflow,
        a rename may have gone unseen). Raises OSError as the kernel says."""
        self._close_group()
        real_source = os.path.realpath(self.source)
        group = Fanotify() if keep_mark_of is None else None
        try:
            if group is not None:
                group.mark(self.source)
            handle_type, handle, _ = name_to_handle_at(self.source)
            lookup = KernelLookup(self.source)
        except BaseException:
            if group is not None:
                group.close()
            raise
        if group is None:
            assert keep_mark_of is not None and keep_mark_of.group is not None
            group, keep_mark_of.group = keep_mark_of.group, None
        table = self.mount_table.read()
        self.mounts.root_device = os.stat(self.source).st_dev
        self.mounts.note(table)
        self.unwatched = {path for path in mounts_below(real_source, table) if self._beyond_the_mark(path)}
        lookup.release()  # (held only while a read resolves handles: see KernelLookup)
        self.group, self.lookup, self.root_lost = group, lookup, False
        self.translator = FanotifyTranslator(real_source, (handle_type, handle), HandleResolver(lookup),
                                             is_dir_on_disk, mount_of(real_source, table))

    def mark_covers(self, path: str) -> bool:
        """Whether this watcher's group still holds its filesystem mark on the file system
        ``path`` is on now, by the kernel's list of the group's marks (/proc/self/fdinfo): the
        end of a file system (its last unmount) removes the mark, and one mounted again at the
        same place is another, unmarked."""
        if self.group is None or self.group.closed:
            return False
        try:
            # The file system's own device, as the mount table gives it: a btrfs file's st_dev is
            # its subvolume's, never the one the mark's line names.
            with open(MOUNTINFO, encoding="latin-1") as table:  # as MountTable reads it
                mount = mount_of(os.path.realpath(path), parse_mountinfo(table.read()))
            if mount is None:
                return False
            device = mount.device
            with open(f"/proc/self/fdinfo/{self.group.fileno()}", encoding="ascii") as info:
                return any(marked_device(line) == device for line in info if line.startswith("fanotify sdev:"))
        except OSError:
            return False

    def fileno(self) -> int:
        """The group's descriptor; ValueError before watch_root and once closed (as a closed
        file object's: ``selectors`` then finds it by the object when it is unregistered)."""
        if self.group is None:
            raise ValueError("the fanotify watcher has no group yet")
        return self.group.fileno()

    def _close_group(self) -> None:
        if self.group is not None:
            self.group.close()  # kept: a closed group's fileno() raises ValueError
        if self.lookup is not None:
            self.lookup.close()
            self.lookup = None

    def close(self) -> None:
        self._close_group()
        self.mount_table.close()

    @property
    def watched_count(self) -> int:
        """Directories watched one by one: none (one mark covers the file system)."""
        return 0

    @property
    def root_alive(self) -> bool:
        return self.group is not None and not self.group.closed and not self.root_lost

    def walk_step(self, max_directories: int | None = None, seconds: float | None = None) -> bool:
        """Nothing is walked: no walks are left."""
        return False

    def retry_unwatched(self, only: set[str] | None = None) -> list[str]:
        return []

    def kept_out(self) -> list[str]:
        """The mount points below the source whose contents stay out of the mirror."""
        return self.mounts.kept_out()

    def read_changes(self) -> list[Change]:
        """Read the queued events (never blocks) and turn them into Changes."""
        assert self.group is not None and self.translator is not None, "watch_root first"
        changes: list[Change] = []
        self.drained = False
        try:
            for _ in range(MAX_READS):
                buffer = self.group.read()
                if not buffer:
                    self.drained = True
                    break
                events = parse_events(buffer)
                if not self.debug_events:
                    changes += self.translator.feed(events)
                    continue
                for event in events:
                    # Only events that change something below the source are logged: the log
                    # lands on some file system, perhaps the marked one, and logging every event
                    # there would make events of its own without end.
                    translated = self.translator.feed([event])
                    if translated:
                        log.debug("fanotify event mask=%s entry=%r old=%r new=%r", describe_mask(event.mask),
                                  event.entry and event.entry.name, event.old and event.old.name,
                                  event.new and event.new.name)
                    changes += translated
        finally:
            if self.lookup is not None:
                self.lookup.release()  # so that the source's file system can be unmounted
        self.root_lost = self.root_lost or any(change.kind == ChangeKind.ROOT_LOST for change in changes)
        return changes

    def _beyond_the_mark(self, path: str) -> bool:
        """Whether another file system mirrored with the source is mounted at ``path`` (below
        it): the mark does not reach it, so it is covered by full syncs only."""
        mount = self.mounts.at(path)
        return mount is not None and mount.device != self.mounts.root_device and (
            self.mounts.kept_out_reason(mount.device) is None)

    def _still_the_marked_source(self) -> bool:
        """Whether the source path still leads to the directory watched, on a file system the
        mark covers. The mount table alone cannot tell: a file system unmounted and another
        mounted at the same place may get the old one's mount id and device number (a tmpfs
        does), while its mark went with the old one; the group's list of marks and the source's
        file handle tell."""
        assert self.translator is not None
        try:
            handle_type, handle, _ = name_to_handle_at(self.source)
        except OSError:
            return False
        return (handle_type, handle) == self.translator.root_handle and self.mark_covers(self.source)

    def read_mount_changes(self) -> list[Change]:
        """After the mount table changed: ROOT_LOST when the source's file system is no longer
        where it was (unmounted, or covered by another mount); each place below the source
        where a file system came or went is sent again (one the mark does not reach is noted
        in :attr:`unwatched`, as the inotify watcher notes a directory it cannot watch)."""
        assert self.translator is not None
        table = self.mount_table.read()
        changes = self.translator.mount_table_changed(table)
        if not changes and not self.root_lost and not self._still_the_marked_source():
            changes = [Change(ChangeKind.ROOT_LOST)]  # (told once, as the translator tells its own)
        self.root_lost = self.root_lost or bool(changes)
        for path in self.mounts.note(table):
            if self.excluder and self.excluder.excludes(path, True):
                continue
            if self._beyond_the_mark(path):
                mount = self.mounts.at(path)
                log.warning("a %s file system was mounted at %s: the fanotify mark does not reach it, so it is "
                            "covered by full syncs only", mount.fstype if mount else "", path)
                self.unwatched.add(path)
            else:
                self.unwatched.discard(path)
            present = is_dir_on_disk(os.path.join(self.source, path))
            changes.append(Change(ChangeKind.NEW_DIR, path, True) if present
                           else Change(ChangeKind.REMOVED, path, True))
        return changes
