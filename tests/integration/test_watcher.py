"""The watch walk on real inotify: every directory is watched, including below leaves found
by their link count, and a subdirectory made in a leaf after the walk is seen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from inotify_simple import flags

from pirsyncd.config.filters import Excluder
from pirsyncd.source.events import Change, ChangeKind, WatchedDir
from pirsyncd.source.watcher import Watcher
from tests.support.processes import unwatched_directories
from tests.support.trees import real_directories


def test_every_directory_is_watched_and_new_ones_in_leaves_are_seen(tmp_path: Path) -> None:
    source = tmp_path / "source"
    for path in ("a/b/c", "a/leaf", "d", "e/f/g/h", "e/f/leaf2"):
        (source / path).mkdir(parents=True)
        (source / path / "file").write_text("x")
    (source / "link-to-a").symlink_to("a")
    watcher = Watcher(str(source), Excluder(()))
    try:
        watcher.watch_root()
        watched = {watcher.tree.path_of(node) for node in watcher.tree.by_wd.values()}
        assert watched == real_directories(source)
        (source / "a" / "leaf" / "new").mkdir()
        (source / "a" / "leaf" / "new" / "deeper").mkdir()
        changes = watcher.read_changes()
        assert any(change.kind == ChangeKind.NEW_DIR and change.path == "a/leaf/new" for change in changes)
        watched = {watcher.tree.path_of(node) for node in watcher.tree.by_wd.values()}
        assert {"a/leaf/new", "a/leaf/new/deeper"} <= watched
    finally:
        watcher.close()


def _watched_paths(watcher: Watcher) -> set[str]:
    return {watcher.tree.path_of(node) for node in watcher.tree.by_wd.values()}


def test_a_directory_replaced_by_a_symlink_is_never_watched_through(tmp_path: Path) -> None:
    """The deploy step of lsyncd #290: a copy of top/d1 made at d2/d1, removed and replaced by a
    symlink to top/d1 before its events are read. Walking d2/d1/x then would reach top/d1/x
    through the symlink; its watch must stay at top/d1/x, where its events belong."""
    source = tmp_path / "source"
    (source / "top" / "d1" / "x").mkdir(parents=True)
    (source / "d2").mkdir()
    watcher = Watcher(str(source), Excluder(()))
    try:
        watcher.watch_root()
        (source / "d2" / "d1").mkdir()
        watcher.read_changes()
        assert "d2/d1" in _watched_paths(watcher)
        (source / "d2" / "d1" / "x").mkdir()  # the copy goes on ...
        for path in (source / "d2" / "d1" / "x", source / "d2" / "d1"):
            path.rmdir()
        (source / "d2" / "d1").symlink_to("../top/d1")  # ... and is replaced before we read
        watcher.read_changes()
        assert _watched_paths(watcher) == real_directories(source)
        (source / "top" / "d1" / "x" / "written-later").write_text("w")
        changes = watcher.read_changes()
        assert "top/d1/x/written-later" in {change.path for change in changes}, changes
    finally:
        watcher.close()


def test_a_renamed_directory_met_by_a_walk_before_its_rename_event_moves_there(tmp_path: Path) -> None:
    """The kernel hands back the watch it has for a directory; the walk of a new directory that
    meets one renamed into it (its rename events still queued) takes it to its real path."""
    source = tmp_path / "source"
    (source / "old").mkdir(parents=True)
    watcher = Watcher(str(source), Excluder(()))
    try:
        watcher.watch_root()
        (source / "new").mkdir()
        (source / "old").rename(source / "new" / "moved")
        watcher.read_changes()
        assert _watched_paths(watcher) == {"", "new", "new/moved"}
        (source / "new" / "moved" / "f").write_text("f")
        assert "new/moved/f" in {change.path for change in watcher.read_changes()}
    finally:
        watcher.close()


def test_a_subdirectory_made_while_its_parent_is_walked_is_watched(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``mkdir -p`` racing the walk: a subdirectory made after a directory was opened and
    looked at (one link: a leaf) but before its watch existed has no event; the walk must
    find it all the same."""
    source = tmp_path / "source"
    (source / "a").mkdir(parents=True)
    watcher = Watcher(str(source), Excluder(()))
    walk = watcher.watch_open_directory

    def racing(directory_fd: int, status: os.stat_result, parent: WatchedDir | None, name: str,
               relative: str) -> WatchedDir | None:
        if relative == "a/new/child":
            os.mkdir(source / "a" / "new" / "child" / "made-meanwhile")
        return walk(directory_fd, status, parent, name, relative)

    try:
        watcher.watch_root()
        assert watcher.leaf_device is not None or os.stat(source).st_nlink == 1, "the link-count shortcut is on"
        monkeypatch.setattr(watcher, "watch_open_directory", racing)
        (source / "a" / "new" / "child").mkdir(parents=True)
        watcher.read_changes()
        assert unwatched_directories(source, watcher.fileno()) == set()
        assert "a/new/child/made-meanwhile" in _watched_paths(watcher)
    finally:
        watcher.close()


def test_a_directory_moved_out_and_back_in_one_read_stays_watched_and_is_sent_whole(tmp_path: Path) -> None:
    """``mv d /elsewhere; edit /elsewhere/d/f; mv /elsewhere/d d`` between two reads: the move out
    is told last (its MOVED_TO was waited for), yet d is back, watched, and sent whole, so the
    edit made outside reaches the mirror."""
    source, outside = tmp_path / "source", tmp_path / "outside"
    (source / "d" / "sub").mkdir(parents=True)
    outside.mkdir()
    watcher = Watcher(str(source), Excluder(()))
    try:
        watcher.watch_root()
        (source / "d").rename(outside / "d")
        (outside / "d" / "sub" / "f").write_text("edited outside")
        (outside / "d").rename(source / "d")
        changes = watcher.read_changes()
        assert [change for change in changes if change.path == "d"][-1] == Change(ChangeKind.NEW_DIR, "d", True)
        assert unwatched_directories(source, watcher.fileno()) == set()
        (source / "d" / "sub" / "g").write_text("g")
        assert "d/sub/g" in {change.path for change in watcher.read_changes()}
    finally:
        watcher.close()


IN_MOVED_TO = flags.MOVED_TO


class HeldBackMovedTo:
    """The watcher's inotify, but a MOVED_TO is held back from the read that finds it and
    from reads that do not wait: a renaming process preempted between the two halves."""

    def __init__(self, inotify: object) -> None:
        self.inotify = inotify
        self.held: list[Any] = []

    def read(self, timeout: int | None = None) -> list[Any]:
        events: list[Any] = self.inotify.read(timeout=0)  # type: ignore[attr-defined]
        if timeout:
            events, self.held = [*self.held, *events], []
            return events
        self.held += [event for event in events if event.mask & IN_MOVED_TO]
        return [event for event in events if not event.mask & IN_MOVED_TO]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inotify, name)


def test_a_rename_whose_moved_to_comes_late_is_still_a_rename(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "big" / "sub").mkdir(parents=True)
    watcher = Watcher(str(source), Excluder(()))
    try:
        watcher.watch_root()
        watcher.inotify = HeldBackMovedTo(watcher.inotify)
        (source / "big").rename(source / "big-renamed")
        changes = watcher.read_changes()
        assert changes == [Change(ChangeKind.MOVED, "big-renamed", True, "big")], changes
        assert _watched_paths(watcher) == {"", "big-renamed", "big-renamed/sub"}
    finally:
        watcher.close()
