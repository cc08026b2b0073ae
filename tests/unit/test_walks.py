"""Tree walks in bounded steps (pirsyncd.source.walks), driven step by step on real inotify in
temporary directories: the same watches as one walk, and events read between two steps keep
every watch at its directory's real path."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pirsyncd.config.filters import Excluder
from pirsyncd.source.events import ChangeKind
from pirsyncd.source.watcher import Watcher
from tests.support.processes import unwatched_directories, watched_inode_count
from tests.support.trees import real_directories, write_file

STEP = 100  # directories a step visits


def make_tree(root: Path, top: int, middle: int, bottom: int) -> int:
    """``top`` directories of ``middle`` of ``bottom`` (a file in each middle one); return how
    many directories that is."""
    for first in range(top):
        for second in range(middle):
            for third in range(bottom):
                (root / f"t{first:02d}" / f"m{second:02d}" / f"b{third:02d}").mkdir(parents=True)
            write_file(root / f"t{first:02d}" / f"m{second:02d}" / "file", "x\n")
    return top * (1 + middle * (1 + bottom))


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[Watcher]:
    (tmp_path / "source").mkdir()
    each = Watcher(str(tmp_path / "source"), Excluder(()))
    each.step_directories = STEP  # the step at the end of each read, too
    try:
        yield each
    finally:
        each.close()


def watched_paths(watcher: Watcher) -> set[str]:
    return {watcher.tree.path_of(node) for node in watcher.tree.by_wd.values()}


def walk_in_steps(watcher: Watcher) -> int:
    """Step until no walk is left; return how many steps that took."""
    steps = 0
    while watcher.walking:
        watcher.walk_step(max_directories=STEP, seconds=None)
        steps += 1
        assert steps < 10_000, "a walk that never ends"
    return steps


def assert_watched_at_real_paths(source: Path, watcher: Watcher) -> None:
    """Every real directory is watched, nothing else is, and the tree names each watch by
    the real path of the directory the kernel watches (its inode)."""
    assert not watcher.walking
    assert unwatched_directories(source, watcher.fileno()) == set()
    assert watched_paths(watcher) == real_directories(source)
    assert watched_inode_count(watcher.fileno()) == len(watcher.tree)
    for node in watcher.tree.by_wd.values():
        path = watcher.tree.path_of(node)
        assert os.lstat(source / path).st_ino == node.ino, f"{path!r} is watched as another directory"


def test_a_tree_walked_in_steps_is_watched_as_by_one_walk(tmp_path: Path, watcher: Watcher) -> None:
    source = tmp_path / "source"
    count = make_tree(source, 20, 10, 9)  # 2,000 directories
    one_walk = Watcher(str(source), Excluder(()))
    try:
        one_walk.watch_root()
        assert not one_walk.walking
        expected = watched_paths(one_walk)
    finally:
        one_walk.close()
    assert len(expected) == count + 1 == len(real_directories(source))

    watcher.watch_root(walk_all=False)
    assert watched_paths(watcher) == {""} and watcher.walking
    steps = walk_in_steps(watcher)
    assert steps >= count // STEP
    assert watched_paths(watcher) == expected
    assert_watched_at_real_paths(source, watcher)


def test_a_tree_moved_in_is_walked_in_steps_after_the_read(tmp_path: Path, watcher: Watcher) -> None:
    source, outside = tmp_path / "source", tmp_path / "outside"
    count = make_tree(outside / "big", 20, 10, 9)
    watcher.watch_root()
    (outside / "big").rename(source / "big")
    changes = watcher.read_changes()
    assert [(change.kind, change.path) for change in changes] == [(ChangeKind.NEW_DIR, "big")]
    assert watcher.walking, "the read took one step, not the whole tree"
    assert len(watcher.tree) < count // 2
    walk_in_steps(watcher)
    assert_watched_at_real_paths(source, watcher)
    write_file(source / "big" / "t07" / "m03" / "b05" / "later", "x\n")
    assert "big/t07/m03/b05/later" in {change.path for change in watcher.read_changes()}


def test_directories_renamed_deleted_or_made_between_steps_are_watched_at_their_real_paths(tmp_path: Path) -> None:
    """The walk keeps its directories open and knows them by their place in the watch tree,
    which the events read between two steps keep right: the directory half walked renamed
    (what it has left is judged by the excludes at its new path), the one below it half walked
    moved out of the source, one not reached yet deleted, one renamed deeper, one made meanwhile."""
    source, outside = tmp_path / "source", tmp_path / "outside"
    outside.mkdir()
    make_tree(source, 12, 10, 9)  # 101 directories a top one: 350 stop in the middle of one
    watcher = Watcher(str(source), Excluder(()))
    try:
        watcher.watch_root(walk_all=False)
        for budget in (STEP, STEP, STEP, 50):
            watcher.walk_step(max_directories=budget, seconds=None)
        watched = watched_paths(watcher)
        tops = sorted(path for path in real_directories(source) if path and "/" not in path)
        middles = sorted(path for path in real_directories(source) if path.count("/") == 1)
        half, = (top for top in tops if top in watched and not all(
            f"{middle}/b08" in watched for middle in middles if middle.startswith(f"{top}/")))
        half_middle, = (middle for middle in middles if middle in watched and middle.startswith(f"{half}/")
                        and not all(f"{middle}/b{index:02d}" in watched for index in range(9)))
        done = [top for top in tops if top in watched and top != half]
        waiting = [top for top in tops if top not in watched]
        unreached = [middle.split("/")[1] for middle in middles
                     if middle.startswith(f"{half}/") and middle not in watched]
        assert done and len(waiting) >= 2 and unreached, (done, waiting, unreached)
        # What the half walked directory has left is excluded by its new name.
        watcher.excluder = Excluder(tuple(f"/renamed/{name}" for name in unreached))
        (source / half_middle).rename(outside / "moved-out")
        (source / half / "new-meanwhile" / "deeper").mkdir(parents=True)
        (source / half).rename(source / "renamed")
        shutil.rmtree(source / waiting[0])
        (source / waiting[1]).rename(source / done[0] / "moved-deeper")
        while watcher.walking:  # events between steps, as the loop reads them
            watcher.read_changes()
            watcher.walk_step(max_directories=STEP, seconds=None)
        watcher.read_changes()
        assert not watcher.walking
        # Excluded at the new path: the middle directories the walk had not reached (with theirs).
        excluded = {path for path in real_directories(source)
                    if any(path == f"renamed/{name}" or path.startswith(f"renamed/{name}/") for name in unreached)}
        assert watched_paths(watcher) == real_directories(source) - excluded
        assert unwatched_directories(source, watcher.fileno()) == excluded
        assert watched_inode_count(watcher.fileno()) == len(watcher.tree)
        for node in watcher.tree.by_wd.values():
            path = watcher.tree.path_of(node)
            assert os.lstat(source / path).st_ino == node.ino, f"{path!r} is watched as another directory"
        write_file(source / "renamed" / "new-meanwhile" / "deeper" / "f", "x\n")
        write_file(source / done[0] / "moved-deeper" / "m01" / "b02" / "f", "x\n")
        paths = {change.path for change in watcher.read_changes()}
        assert {"renamed/new-meanwhile/deeper/f", f"{done[0]}/moved-deeper/m01/b02/f"} <= paths
    finally:
        watcher.close()


def test_closing_a_watcher_with_a_walk_pending_closes_its_directories(tmp_path: Path) -> None:
    """A stop or a reload while a walk is pending leaves no descriptor open."""
    source = tmp_path / "source"
    make_tree(source, 5, 10, 9)
    before = set(os.listdir("/proc/self/fd"))
    watcher = Watcher(str(source), Excluder(()))
    watcher.watch_root(walk_all=False)
    watcher.walk_step(max_directories=150, seconds=None)
    assert watcher.walking
    watcher.close()
    assert set(os.listdir("/proc/self/fd")) - before == set()
