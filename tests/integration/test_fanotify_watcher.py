"""The FanotifyWatcher against the real kernel on a tmpfs this test mounts: changes anywhere
below the source with no walk, nothing for work beside it, an overflowing queue, a file system
mounted below the source (beyond the mark) and the source's own file system unmounted.
Skipped where filesystem marks are not possible here, with the probe's reason."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pirsyncd.config.filters import Excluder
from pirsyncd.source.events import Change, ChangeKind
from pirsyncd.source.fanotify_probe import filesystem_marks_refusal
from pirsyncd.source.fanotify_watcher import FanotifyWatcher
from tests.support.mounts import Mounts
from tests.support.trees import wait_for

pytestmark = [pytest.mark.auto_deletion_mode,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, CAP_SYS_ADMIN)")]


@pytest.fixture
def watched(tmp_path: Path, mounts: Mounts) -> Iterator[tuple[FanotifyWatcher, Path]]:
    """A watcher on tmpfs/src, the tmpfs mounted at tmp_path/fs."""
    target = tmp_path / "fs"
    target.mkdir()
    mounts.mount("-t", "tmpfs", "tmpfs", target=target)
    (target / "src").mkdir()
    (target / "beside").mkdir()
    refusal = filesystem_marks_refusal(str(target / "src"))
    if refusal:
        pytest.skip(f"fanotify filesystem marks are not possible here: {refusal}")
    watcher = FanotifyWatcher(str(target / "src"), Excluder(()))
    try:
        watcher.watch_root()
        yield watcher, target
    finally:
        watcher.close()


def read_until(watcher: FanotifyWatcher, wanted: Change, mounts_changed: bool = False) -> list[Change]:
    changes: list[Change] = []

    def arrived() -> bool:
        changes.extend(watcher.read_mount_changes() if mounts_changed else watcher.read_changes())
        return wanted in changes

    wait_for(arrived, 10, lambda: f"{wanted} did not come; came: {changes}")
    return changes


def test_changes_anywhere_below_the_source_and_none_beside_it(watched: tuple[FanotifyWatcher, Path]) -> None:
    watcher, root = watched
    assert watcher.watched_count == 0 and not watcher.walking and watcher.root_alive
    (root / "beside" / "noise").write_text("x")
    (root / "src" / "a" / "b" / "c").mkdir(parents=True)
    (root / "src" / "a" / "b" / "c" / "f").write_text("x")
    changes = read_until(watcher, Change(ChangeKind.CLOSED, "a/b/c/f"))
    assert changes == [Change(ChangeKind.NEW_DIR, "a", True), Change(ChangeKind.NEW_DIR, "a/b", True),
                       Change(ChangeKind.NEW_DIR, "a/b/c", True), Change(ChangeKind.WRITING, "a/b/c/f"),
                       Change(ChangeKind.CLOSED, "a/b/c/f")]


def test_an_overflowing_queue_asks_for_a_full_sync(watched: tuple[FanotifyWatcher, Path]) -> None:
    watcher, root = watched
    with open("/proc/sys/fs/fanotify/max_queued_events") as limit:
        files = int(limit.read()) // 2 + 1000  # a create and a close each
    for number in range(files):
        os.close(os.open(root / "src" / f"f{number}", os.O_CREAT | os.O_WRONLY))
    changes = read_until(watcher, Change(ChangeKind.RESCAN))
    assert Change(ChangeKind.RESCAN) in changes


def test_a_file_system_mounted_below_the_source_is_beyond_the_mark(watched: tuple[FanotifyWatcher, Path],
                                                                   mounts: Mounts) -> None:
    watcher, root = watched
    (root / "src" / "inner").mkdir()
    watcher.read_changes()
    mounts.mount("-t", "tmpfs", "tmpfs", target=root / "src" / "inner")
    changes = read_until(watcher, Change(ChangeKind.NEW_DIR, "inner", True), mounts_changed=True)
    assert watcher.unwatched == {"inner"} and Change(ChangeKind.ROOT_LOST) not in changes
    mounts.unmount(root / "src" / "inner")
    read_until(watcher, Change(ChangeKind.NEW_DIR, "inner", True), mounts_changed=True)
    assert watcher.unwatched == set()


def test_the_source_s_file_system_unmounted_is_the_source_lost(watched: tuple[FanotifyWatcher, Path],
                                                               mounts: Mounts) -> None:
    watcher, root = watched
    mounts.unmount(root, lazy=True)  # the watcher holds a descriptor of the source
    read_until(watcher, Change(ChangeKind.ROOT_LOST), mounts_changed=True)
    assert not watcher.root_alive
