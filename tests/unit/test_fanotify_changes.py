"""Decoded fanotify events made into the inotify side's changes: paths below the source, events
outside it or in deleted directories dropped, merged events judged by the disk, renames
replayed or sent whole, overflow, the source lost. The world is plain values: where each
directory handle is now, and what is on disk now."""

from __future__ import annotations

from pirsyncd.source.events import Change, ChangeKind
from pirsyncd.source.fanotify_changes import FanotifyTranslator
from pirsyncd.source.fanotify_events import (
    FAN_ATTRIB,
    FAN_CLOSE_WRITE,
    FAN_CREATE,
    FAN_DELETE,
    FAN_DELETE_SELF,
    FAN_MODIFY,
    FAN_MOVE_SELF,
    FAN_ONDIR,
    FAN_Q_OVERFLOW,
    FAN_RENAME,
    UNREACHABLE,
    UNRESOLVABLE,
    Entry,
    FanotifyEvent,
    FileHandle,
    Gone,
)
from pirsyncd.source.fanotify_paths import HandleResolver
from pirsyncd.source.mounts import Mount
from tests.support.fanotify import handle

SOURCE = "/srv/www"
ABOVE, ROOT, A, B, OTHER = handle(1), handle(2), handle(3), handle(4), handle(5)
MOUNT = Mount(7, "/srv", "ext4")


class World:
    """Where each directory handle is now (absent: gone) and what is on disk now."""

    def __init__(self) -> None:
        self.directories: dict[FileHandle, str] = {ABOVE: "/srv", ROOT: SOURCE, A: f"{SOURCE}/a",
                                                   B: f"{SOURCE}/a/b", OTHER: "/var/other"}
        self.on_disk: dict[str, bool] = {}  # path -> is a directory
        self.failing: set[FileHandle] = set()  # the kernel fails to resolve these (ENOMEM)
        self.unreachable: set[FileHandle] = set()  # beyond the source's mount (a bind mount)

    def lookup(self, file_handle: FileHandle) -> str | Gone:
        if file_handle in self.failing:
            return Gone(UNRESOLVABLE, "ENOMEM")
        if file_handle in self.unreachable:
            return Gone(UNREACHABLE)
        return self.directories.get(file_handle, Gone("stale"))

    def translator(self) -> FanotifyTranslator:
        return FanotifyTranslator(SOURCE, (ROOT.handle_type, ROOT.handle), HandleResolver(self.lookup),
                                  self.on_disk.get, MOUNT)


def at(mask: int, directory: FileHandle, name: str) -> FanotifyEvent:
    return FanotifyEvent(mask, entry=Entry(directory, name))


def renamed(mask: int, old: tuple[FileHandle, str], new: tuple[FileHandle, str]) -> FanotifyEvent:
    return FanotifyEvent(FAN_RENAME | mask, old=Entry(*old), new=Entry(*new))


def test_new_nested_directories_and_a_file_written_there() -> None:
    world = World()
    world.on_disk.update({f"{SOURCE}/a": True, f"{SOURCE}/a/b": True, f"{SOURCE}/a/b/f": False})
    changes = world.translator().feed([
        at(FAN_CREATE | FAN_ONDIR, ROOT, "a"), at(FAN_CREATE | FAN_ONDIR, A, "b"),
        at(FAN_CREATE | FAN_MODIFY | FAN_CLOSE_WRITE, B, "f"), at(FAN_MODIFY, B, "f"), at(FAN_ATTRIB, B, "f")])
    assert changes == [Change(ChangeKind.NEW_DIR, "a", True), Change(ChangeKind.NEW_DIR, "a/b", True),
                       Change(ChangeKind.CLOSED, "a/b/f"), Change(ChangeKind.WRITING, "a/b/f"),
                       Change(ChangeKind.CHANGED, "a/b/f")]


def test_events_outside_the_source_or_in_deleted_directories_are_dropped_and_counted() -> None:
    world = World()
    translator = world.translator()
    gone = handle(99)
    assert translator.feed([at(FAN_CLOSE_WRITE, OTHER, "f"), at(FAN_CREATE, ABOVE, "www2"),
                            at(FAN_CLOSE_WRITE, gone, "f"), at(FAN_ATTRIB | FAN_ONDIR, OTHER, "."),
                            FanotifyEvent(FAN_ATTRIB | FAN_DELETE_SELF, object=handle(98))]) == []
    assert (translator.outside, translator.stale) == (3, 1)


def test_merged_create_and_delete_are_judged_by_what_is_there_now() -> None:
    world = World()
    world.on_disk.update({f"{SOURCE}/again": False, f"{SOURCE}/newdir": True, f"{SOURCE}/was-dir": False})
    changes = world.translator().feed([
        at(FAN_CREATE | FAN_DELETE | FAN_CLOSE_WRITE, ROOT, "again"),  # rm f; echo > f
        at(FAN_CREATE | FAN_DELETE | FAN_CLOSE_WRITE, ROOT, "gone"),  # echo > f; rm f
        at(FAN_CREATE | FAN_DELETE | FAN_ONDIR, ROOT, "newdir"),  # rmdir d; mkdir d
        at(FAN_CREATE | FAN_DELETE | FAN_ONDIR, ROOT, "was-dir"),  # a file there now: its own event tells
        at(FAN_DELETE, ROOT, "again"),  # deleted, and made again by an event not merged (still to come)
    ])
    assert changes == [Change(ChangeKind.CLOSED, "again"), Change(ChangeKind.REMOVED, "gone"),
                       Change(ChangeKind.NEW_DIR, "newdir", True), Change(ChangeKind.REMOVED, "was-dir", True),
                       Change(ChangeKind.REMOVED, "again")]


def test_attribute_changes_of_directories_come_as_their_own_events() -> None:
    world = World()
    assert world.translator().feed([at(FAN_ATTRIB | FAN_ONDIR, A, "."), at(FAN_ATTRIB | FAN_ONDIR, ROOT, "."),
                                    at(FAN_ATTRIB | FAN_ONDIR, A, "b")]) == [
        Change(ChangeKind.CHANGED, "a", True), Change(ChangeKind.CHANGED, ".", True),
        Change(ChangeKind.CHANGED, "a/b", True)]


def test_renames_within_into_and_out_of_the_source() -> None:
    world = World()
    changes = world.translator().feed([
        renamed(0, (A, "f"), (B, "g")),
        renamed(FAN_ONDIR, (OTHER, "d"), (ROOT, "d")),
        renamed(0, (OTHER, "f"), (ROOT, "f")),
        renamed(FAN_ONDIR, (A, "old"), (OTHER, "old")),
        renamed(0, (OTHER, "x"), (OTHER, "y")),
        renamed(0, (handle(99), "x"), (ROOT, "x")),  # from a directory deleted since: as if from outside
    ])
    assert changes == [Change(ChangeKind.MOVED, "a/b/g", False, "a/f"), Change(ChangeKind.NEW_DIR, "d", True),
                       Change(ChangeKind.CLOSED, "f"), Change(ChangeKind.REMOVED, "a/old", True),
                       Change(ChangeKind.CLOSED, "x")]


def test_a_directory_rename_is_replayed_when_its_events_met_it_where_it_was() -> None:
    """b's handle was resolved (to a/b) before a was renamed: its answer is forgotten at the
    rename, and the next event in b meets b at its new path."""
    world = World()
    translator = world.translator()
    first = translator.feed([at(FAN_CLOSE_WRITE, B, "f")])
    world.directories.update({A: f"{SOURCE}/c", B: f"{SOURCE}/c/b"})
    later = translator.feed([renamed(FAN_ONDIR, (ROOT, "a"), (ROOT, "c")), at(FAN_CLOSE_WRITE, B, "f")])
    assert first + later == [Change(ChangeKind.CLOSED, "a/b/f"), Change(ChangeKind.MOVED, "c", True, "a"),
                             Change(ChangeKind.CLOSED, "c/b/f")]


def test_a_directory_rename_read_after_events_placed_at_its_new_path_sends_it_whole() -> None:
    """mv a/f b/g; mv a c, both read at once: a is at c when the first event is resolved, so it
    says c/f, a path that did not exist then. Replaying ``mv a c`` after it would keep a stale
    c/f at the destination; sending c whole (and removing a) is right whatever came before."""
    world = World()
    world.directories.update({A: f"{SOURCE}/c", B: f"{SOURCE}/b"})
    changes = world.translator().feed([renamed(0, (A, "f"), (B, "g")), renamed(FAN_ONDIR, (ROOT, "a"), (ROOT, "c"))])
    assert changes == [Change(ChangeKind.MOVED, "b/g", False, "c/f"), Change(ChangeKind.REMOVED, "a", True),
                       Change(ChangeKind.NEW_DIR, "c", True)]


def test_a_deleted_directory_s_answers_are_forgotten() -> None:
    world = World()
    translator = world.translator()
    translator.feed([at(FAN_CLOSE_WRITE, B, "f")])
    del world.directories[B]
    assert translator.feed([at(FAN_DELETE | FAN_ONDIR, A, "b"), at(FAN_CLOSE_WRITE, B, "f")]) == [
        Change(ChangeKind.REMOVED, "a/b", True)]
    assert translator.stale == 1


def test_the_source_lost_overflow_and_an_unmount() -> None:
    world = World()
    translator = world.translator()
    root_lost = [Change(ChangeKind.ROOT_LOST)]
    assert translator.feed([FanotifyEvent(FAN_Q_OVERFLOW)]) == [Change(ChangeKind.RESCAN)]
    assert translator.feed([at(FAN_DELETE_SELF | FAN_ONDIR, ROOT, ".")]) == root_lost
    assert translator.feed([at(FAN_MOVE_SELF | FAN_ONDIR, ROOT, ".")]) == root_lost
    assert translator.feed([at(FAN_DELETE | FAN_ONDIR, ABOVE, "www")]) == root_lost
    assert translator.feed([renamed(FAN_ONDIR, (ABOVE, "www"), (ABOVE, "www.old"))]) == root_lost
    world.directories[handle(6)] = "/"
    assert translator.feed([renamed(FAN_ONDIR, (handle(6), "srv"), (handle(6), "srv2"))]) == root_lost
    assert translator.feed([at(FAN_ATTRIB | FAN_ONDIR, ABOVE, "www"), at(FAN_CREATE | FAN_ONDIR, ABOVE, "x")]) == []
    assert translator.mount_table_changed([Mount(1, "/", "ext4"), MOUNT]) == []
    assert translator.mount_table_changed([Mount(1, "/", "ext4")]) == root_lost
    assert translator.mount_table_changed([Mount(1, "/", "ext4"), MOUNT]) == []  # on it again
    assert translator.mount_table_changed([Mount(1, "/", "ext4"), MOUNT, Mount(8, SOURCE, "tmpfs")]) == root_lost


def test_a_name_created_and_deleted_then_renamed_is_not_carried_as_a_removal() -> None:
    """rmdir d; mkdir d; mv d e: the create and delete of d merge and d is not there when read;
    the rename that follows moves something created after the removal: sent as new."""
    world = World()
    world.on_disk.update({f"{SOURCE}/e": True, f"{SOURCE}/y": False})
    changes = world.translator().feed([
        at(FAN_CREATE | FAN_DELETE | FAN_ONDIR, ROOT, "d"), renamed(FAN_ONDIR, (ROOT, "d"), (ROOT, "e")),
        at(FAN_CREATE | FAN_DELETE, ROOT, "x"), renamed(0, (ROOT, "x"), (ROOT, "y")),
        renamed(0, (ROOT, "x"), (ROOT, "z")),  # x again: a later object of that name, moved as usual
    ])
    assert changes == [Change(ChangeKind.REMOVED, "d", True), Change(ChangeKind.REMOVED, "d", True),
                       Change(ChangeKind.NEW_DIR, "e", True), Change(ChangeKind.REMOVED, "x"),
                       Change(ChangeKind.REMOVED, "x"), Change(ChangeKind.CLOSED, "y"),
                       Change(ChangeKind.MOVED, "z", False, "x")]


def test_a_directory_the_kernel_cannot_resolve_asks_for_a_full_sync_and_is_asked_again() -> None:
    world = World()
    world.failing.add(A)
    translator = world.translator()
    assert translator.feed([at(FAN_CLOSE_WRITE, A, "f"), at(FAN_CLOSE_WRITE, ROOT, "g")]) == [
        Change(ChangeKind.CLOSED, "g"), Change(ChangeKind.RESCAN)]
    world.failing.clear()
    assert translator.feed([at(FAN_CLOSE_WRITE, A, "f")]) == [Change(ChangeKind.CLOSED, "a/f")]


def test_a_directory_beyond_the_source_s_mount_is_asked_again_once_moved_in() -> None:
    """The source a bind mount of a subdirectory: a directory beside it is "unreachable" (its
    events, even a directory named like the source's parent renamed there, are dropped) until
    it is moved in through another mount of the file system, which no event of the source's
    tells by its handle: the answer is not kept, so what is written in it then counts."""
    world = World()
    staging, release = handle(6), handle(7)
    world.unreachable.update({staging, release})
    translator = world.translator()
    assert translator.feed([at(FAN_CLOSE_WRITE, release, "f"),
                            renamed(FAN_ONDIR, (staging, "srv"), (staging, "srv.old")),
                            at(FAN_DELETE | FAN_ONDIR, staging, "srv")]) == []
    world.unreachable.discard(release)
    world.directories[release] = f"{SOURCE}/release"
    world.on_disk[f"{SOURCE}/release/later"] = False
    assert translator.feed([at(FAN_CLOSE_WRITE, release, "later")]) == [Change(ChangeKind.CLOSED, "release/later")]


def test_the_source_leaving_its_mount_is_told_once_not_at_each_change_of_the_mount_table() -> None:
    """Every mount anywhere changes the table: a loss told again at each would keep putting off
    the re-check that finds the source back (on a machine where containers come and go)."""
    translator = World().translator()
    elsewhere = Mount(9, "/run/elsewhere", "tmpfs")
    assert translator.mount_table_changed([Mount(1, "/", "ext4")]) == [Change(ChangeKind.ROOT_LOST)]
    assert translator.mount_table_changed([Mount(1, "/", "ext4"), elsewhere]) == []
    assert translator.mount_table_changed([Mount(1, "/", "ext4")]) == []
    assert translator.mount_table_changed([Mount(1, "/", "ext4"), MOUNT, elsewhere]) == []  # back on it
    assert translator.mount_table_changed([Mount(1, "/", "ext4")]) == [Change(ChangeKind.ROOT_LOST)]
