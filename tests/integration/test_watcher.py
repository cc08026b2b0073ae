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
