"""The fanotify backend's directory index (pirsyncd.source.dirindex), fed Changes by hand as the
fanotify watcher would make them, against real directories in temporary directories: built in
steps it equals the disk; kept from changes it equals the disk once its scans are done; and
whatever order the events come in (fanotify resolves a directory's path when its event is read,
and merges queued events), it never holds a directory at a place the disk does not show.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pirsyncd.config.filters import Excluder
from pirsyncd.source import dirindex
from pirsyncd.source.dirindex import DirectoryIndex
from pirsyncd.source.events import Change, ChangeKind
from tests.support.trees import real_directories, write_file

NEW_DIR, REMOVED, MOVED, CLOSED = ChangeKind.NEW_DIR, ChangeKind.REMOVED, ChangeKind.MOVED, ChangeKind.CLOSED


def new_dir(path: str) -> Change:
    return Change(NEW_DIR, path, True)


def removed(path: str, is_dir: bool = True) -> Change:
    return Change(REMOVED, path, is_dir)


def moved(old: str, new: str, is_dir: bool = True) -> Change:
    return Change(MOVED, new, is_dir, old)


def make_tree(root: Path, *directories: str) -> Path:
    for directory in directories:
        (root / directory).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", "a/b/c", "a/d", "e/f", "g")


def entries(index: DirectoryIndex) -> dict[str, int]:
    """The index as path -> inode (every node reachable from the root)."""
    tree = index.tree
    assert tree.root is not None
    found: dict[str, int] = {}
    stack = [("", tree.root)]
    while stack:
        path, node = stack.pop()
        assert node.wd == node.ino, "an index node's key is its inode"
        assert tree.by_wd.get(node.ino) is node, f"{path!r} is in the tree but not in by_wd"
        found[path] = node.ino
        stack += [(f"{path}/{name}" if path else name, child) for name, child in (node.children or {}).items()]
    assert len(found) == len(tree.by_wd), "by_wd holds nodes the tree does not reach"
    return found


def on_disk(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    excluder = Excluder(exclude)
    return {path: os.lstat(root / path).st_ino for path in real_directories(root)
            if not any(excluder.excludes("/".join(path.split("/")[:depth]), True)
                       for depth in range(1, path.count("/") + 2) if path)}


def assert_nothing_wrong(index: DirectoryIndex, root: Path) -> None:
    """Every directory the index holds is at that place on disk (it may lack some)."""
    for path, inode in entries(index).items():
        assert os.path.isdir(root / path) and not os.path.islink(root / path), f"{path!r} is not a directory on disk"
        assert os.lstat(root / path).st_ino == inode, f"{path!r} holds another directory on disk"


def settle(index: DirectoryIndex, root: Path) -> None:
    """Run the scans left (one directory a step), checking at each step that nothing is wrong."""
    steps = 0
    while index.working:
        index.step(seconds=None, max_directories=1)
        assert_nothing_wrong(index, root)
        steps += 1
        assert steps < 10_000, "scans that never end"
    assert index.complete


def built(root: Path, exclude: tuple[str, ...] = ()) -> DirectoryIndex:
    index = DirectoryIndex(str(root), Excluder(exclude))
    index.begin()
    settle(index, root)
    return index


def test_built_in_steps_it_is_the_tree_of_directories(root: Path) -> None:
    os.symlink("a", root / "link-to-a")
    write_file(root / "a" / "file")
    index = DirectoryIndex(str(root), Excluder(()))
    assert not index.complete and not index.working
    index.begin()
    assert index.working and not index.complete
    settle(index, root)
    assert entries(index) == on_disk(root)
    assert {(ino, parent) for ino, parent, _ in index.tree.directories()} >= {
        (os.lstat(root / "a" / "b").st_ino, os.lstat(root / "a").st_ino)}


def test_excluded_directories_and_mount_points_are_left_out(root: Path) -> None:
    index = DirectoryIndex(str(root), Excluder(("e",)), is_mount_point=lambda path: path == "a/b")
    index.finish()
    assert set(entries(index)) == {"", "a", "a/d", "g"}
    index.apply([new_dir("e/new"), new_dir("a/b")])
    settle(index, root)
    assert set(entries(index)) == {"", "a", "a/d", "g"}


def test_new_removed_and_moved_directories_are_followed(root: Path) -> None:
    index = built(root)
    make_tree(root, "new/x/y")
    index.apply([new_dir("new")])
    assert not index.complete, "a new directory is scanned at a step, not in the read of events"
    settle(index, root)
    shutil.rmtree(root / "e")
    index.apply([removed("e/f"), removed("e")])
    node = index.tree.find("a/b")
    os.rename(root / "a" / "b", root / "g" / "b2")
    index.apply([moved("a/b", "g/b2")])
    assert index.complete, "a move the disk agrees with needs no scan"
    assert index.tree.find("g/b2") is node, "the node moved, with what is below it"
    assert entries(index) == on_disk(root)


def test_a_move_the_disk_does_not_show_is_scanned_not_taken(root: Path) -> None:
    """a moved to h, then moved on before the event is read, another directory made at h:
    taken as it comes, the index would hold a's inode at h."""
    index = built(root)
    os.rename(root / "a", root / "h")
    os.rename(root / "h", root / "g" / "a-later")
    make_tree(root, "h/other")
    index.apply([moved("a", "h")])
    assert_nothing_wrong(index, root)
    index.apply([moved("h", "g/a-later"), new_dir("h")])
    settle(index, root)
    assert entries(index) == on_disk(root)


def test_a_move_onto_a_reused_inode_number_is_put_right_by_the_events_after_it(root: Path) -> None:
    """mv a h; rm -r h; mkdir h: the new h may get a's inode number back, so the move looks
    right on disk and carries a's old subdirectories along; the deletion of h and its creation
    (merged into one event, judged a new directory) follow it and put that right."""
    index = built(root)
    os.rename(root / "a", root / "h")
    shutil.rmtree(root / "h")
    make_tree(root, "h/other")
    index.apply([moved("a", "h"), new_dir("h")])  # (a's own subdirectories' events: stale, dropped)
    settle(index, root)
    assert entries(index) == on_disk(root)


def test_a_merged_create_before_a_rename_is_not_replayed_on_the_future(tmp_path: Path) -> None:
    """mkdir p; (index scanned: p); mv p q; mkdir p. The second mkdir merges into the first's
    queued CREATE, so the events read are NEW_DIR p, then MOVED p -> q, while the disk holds
    the new p and the old one at q."""
    root = make_tree(tmp_path / "src", "p/inside")
    index = built(root)
    old = os.lstat(root / "p").st_ino
    os.rename(root / "p", root / "q")
    make_tree(root, "p")
    index.apply([new_dir("p"), moved("p", "q")])
    assert_nothing_wrong(index, root)
    settle(index, root)
    assert entries(index) == on_disk(root)
    assert entries(index)["q"] == old


def test_an_event_resolved_under_a_later_rename_leaves_nothing_wrong(tmp_path: Path) -> None:
    """rmdir a/x; mv a b; mkdir b/x. The deletion's directory resolves to b when read, so the
    events read are REMOVED b/x (nothing there in the index), the rename sent whole (REMOVED a,
    NEW_DIR b), NEW_DIR b/x."""
    root = make_tree(tmp_path / "src", "a/x/deep", "a/y")
    index = built(root)
    shutil.rmtree(root / "a" / "x")
    os.rename(root / "a", root / "b")
    make_tree(root, "b/x")
    index.apply([removed("b/x")])
    index.apply([removed("a"), new_dir("b"), new_dir("b/x")])
    assert_nothing_wrong(index, root)
    settle(index, root)
    assert entries(index) == on_disk(root)


SWAP = [("a", "tmp"), ("e", "a"), ("tmp", "e"), ("g", "e/g-inside")]


def test_a_swap_read_as_it_happens_moves_nodes_and_scans_nothing(root: Path) -> None:
    index = built(root)
    for old, new in SWAP:
        os.rename(root / old, root / new)
        index.apply([moved(old, new)])
        assert index.complete, f"the move {old} -> {new}, read at once, needed a scan"
    assert entries(index) == on_disk(root)


def test_a_swap_read_after_it_is_over_converges(root: Path) -> None:
    """Each move read once later ones are done: the disk does not show the first ones, which
    are scanned instead of taken."""
    index = built(root)
    for old, new in SWAP:
        os.rename(root / old, root / new)
    index.apply([moved(old, new) for old, new in SWAP])
    assert_nothing_wrong(index, root)
    settle(index, root)
    assert entries(index) == on_disk(root)


def test_a_directory_replaced_by_a_file_leaves_the_index(root: Path) -> None:
    """The file's event read where the index still has the directory (its deletion was told
    under another name, or merged away): that path is looked at again."""
    index = built(root)
    shutil.rmtree(root / "e")
    write_file(root / "e", "a file now\n")
    index.apply([Change(CLOSED, "e")])
    settle(index, root)
    assert entries(index) == on_disk(root)
    (root / "e").unlink()
    make_tree(root, "e/again")
    index.apply([new_dir("e")])
    settle(index, root)
    assert entries(index) == on_disk(root)


def test_changes_between_the_steps_of_the_first_scan(tmp_path: Path) -> None:
    root = tmp_path / "src"
    for first in range(5):
        make_tree(root, *(f"t{first}/m{second}/b" for second in range(5)))
    index = DirectoryIndex(str(root), Excluder(()))
    index.begin()
    index.step(seconds=None, max_directories=3)
    os.rename(root / "t0", root / "t0-renamed")  # walked already, or not yet: both must come out right
    os.rename(root / "t4", root / "t3" / "t4-inside")
    shutil.rmtree(root / "t2")
    make_tree(root, "t1/new/deeper")
    index.apply([moved("t0", "t0-renamed"), moved("t4", "t3/t4-inside"), removed("t2"), new_dir("t1/new")])
    assert_nothing_wrong(index, root)
    settle(index, root)
    assert entries(index) == on_disk(root)


def test_a_node_seen_at_a_new_place_leaves_its_old_one(root: Path) -> None:
    """The scan of a new place finds an inode the index has elsewhere (its move is still
    queued): one inode, one place."""
    index = built(root)
    os.rename(root / "a" / "b", root / "g" / "b")
    index.apply([new_dir("g/b")])  # (as a move from outside would be told)
    settle(index, root)
    assert entries(index) == on_disk(root)


def test_lost_events_make_it_unusable(root: Path) -> None:
    index = built(root)
    index.apply([Change(ChangeKind.RESCAN)])
    assert index.unusable and not index.complete and not index.working
    index.apply([new_dir("g")])  # nothing is followed any more
    assert not index.complete


def test_excluded_names_are_not_followed(root: Path) -> None:
    index = built(root, exclude=("*.tmp",))
    os.rename(root / "a", root / "a.tmp")
    index.apply([moved("a", "a.tmp")])
    settle(index, root)
    assert entries(index) == on_disk(root, exclude=("*.tmp",))
    os.rename(root / "a.tmp", root / "back")
    index.apply([moved("a.tmp", "back")])
    settle(index, root)
    assert entries(index) == on_disk(root, exclude=("*.tmp",))


def test_a_flood_of_new_directories_starts_the_index_over(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dirindex, "RESCAN_LIMIT", 5)
    index = built(root)
    names = [f"new{number}" for number in range(8)]
    make_tree(root, *(f"{name}/sub" for name in names))
    index.apply([new_dir(name) for name in names])
    assert len(index._rescans) <= 5, "the queue of scans is bounded"
    settle(index, root)
    assert entries(index) == on_disk(root)


def test_a_given_up_index_is_built_anew_when_asked(root: Path) -> None:
    index = built(root)
    index.apply([Change(ChangeKind.RESCAN)])
    make_tree(root, "after")
    index.finish()
    assert index.complete and entries(index) == on_disk(root)
