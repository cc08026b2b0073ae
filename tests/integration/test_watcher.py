"""The watch walk on real inotify: every directory is watched, including below leaves found
by their link count, and a subdirectory made in a leaf after the walk is seen."""

from __future__ import annotations

import os
from pathlib import Path

from pirsyncd.events import ChangeKind
from pirsyncd.filters import Excluder
from pirsyncd.watcher import Watcher


def _directories(root: Path) -> set[str]:
    found = {""}
    for parent, names, _ in os.walk(root):
        relative = os.path.relpath(parent, root)
        found |= {name if relative == "." else f"{relative}/{name}" for name in names
                  if not os.path.islink(os.path.join(parent, name))}
    return found


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
        assert watched == _directories(source)
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
        assert _watched_paths(watcher) == _directories(source)
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
