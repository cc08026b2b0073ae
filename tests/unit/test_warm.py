"""The warm start's parts: the scan against a real tree, the move order, the state file's
judgement, and ENTRIES through pending and the plan."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pirsyncd.config.filters import Excluder
from pirsyncd.replica.pending import Pending
from pirsyncd.replica.plan import Renames, deletion_parents, plan_transfers
from pirsyncd.replica.rsync import RunMode
from pirsyncd.restart import statefile
from pirsyncd.restart.statefile import Header, StateUnusable
from pirsyncd.restart.warmscan import WarmScan, order_moves
from pirsyncd.source.events import Change, ChangeKind
from pirsyncd.source.watcher import Watcher
from tests.support.trees import wait_for


def index_and_watermark(root: Path) -> tuple[statefile.Index, float]:
    """The index a running daemon would have written, and a watermark after every ctime in
    the tree (waiting until the clock has moved past them, so later changes are newer)."""
    watcher = Watcher(str(root), Excluder(()))
    try:
        watcher.watch_root()
        index = {ino: (parent, name) for ino, parent, name in watcher.tree.directories()}
    finally:
        watcher.close()
    newest = max(os.lstat(os.path.join(top, name)).st_ctime_ns
                 for top, dirs, files in os.walk(root) for name in [*dirs, *files, "."])
    probe = root.parent / "clock-probe"

    def clock_moved_on() -> bool:
        probe.write_text("x")
        return probe.stat().st_ctime_ns > newest + 2000

    wait_for(clock_moved_on, timeout=5, message="the file system clock to move past the tree's ctimes")
    return index, (newest + 1000) / 1e9  # a float holds about 0.24 us at today's epoch


def scan(root: Path, index: statefile.Index, watermark: float, trusted: bool = True) -> list[tuple[str, str, str]]:
    """What a warm start finds: the watch tree judged against the index, then find's list."""
    warm = WarmScan(str(root), Excluder(()), watermark, index)
    watcher = Watcher(str(root), Excluder(()))
    try:
        watcher.watch_root()
        warm.directories(watcher.tree)
        found = subprocess.run(warm.find_command(), capture_output=True, check=True).stdout
        warm.entries_found(found, watcher.tree)
    finally:
        watcher.close()
    return [(change.kind.value, change.path, change.old_path) for change in warm.result(trusted)]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for directory in ("a/b/c", "keep/inner", "gone/deep", "moving/sub", "out"):
        (root / directory).mkdir(parents=True)
    for path in ("a/b/c/f", "keep/inner/g", "keep/h", "gone/deep/x", "moving/sub/y", "top"):
        (root / path).write_text(path)
    return root


def test_nothing_changed_means_no_changes(tree: Path) -> None:
    index, watermark = index_and_watermark(tree)
    assert scan(tree, index, watermark) == []


def test_each_kind_of_change_is_found(tree: Path, tmp_path: Path) -> None:
    index, watermark = index_and_watermark(tree)
    (tree / "fresh/deeper").mkdir(parents=True)  # unknown: sent whole, not looked into
    (tree / "fresh/deeper/z").write_text("z")  # (made before any deletion: no inode reused)
    (tree / "moving").rename(tree / "moved")  # a rename within the tree: replayed
    (tree / "moved/sub/new-file").write_text("n")  # a create inside the renamed directory
    shutil.rmtree(tree / "gone")  # the root's entries changed
    (tree / "out").rename(tmp_path / "out")  # moved out: the root's entries again
    status = (tree / "keep/h").stat()
    (tree / "keep/h").write_text("H")  # same size, old mtime restored: the ctime says it
    os.utime(tree / "keep/h", ns=(status.st_atime_ns, status.st_mtime_ns))
    (tree / "a/b/c/f").unlink()  # a deleted file: its directory's entries
    found = scan(tree, index, watermark)
    assert found[0] == ("moved", "moved", "moving")  # renames first
    assert sorted(found[1:]) == sorted([
        ("entries", ".", ""), ("new-dir", "fresh", ""), ("changed", "keep/h", ""),
        ("entries", "a/b/c", ""), ("changed", "moved/sub/new-file", ""), ("entries", "moved/sub", "")])


def test_an_untrusted_state_sends_renamed_directories_whole_and_checks_changed_files_directories(tree: Path) -> None:
    index, watermark = index_and_watermark(tree)
    (tree / "moving").rename(tree / "moved")
    (tree / "moved/sub/new-file").write_text("n")
    (tree / "keep/h").write_text("changed")
    # Untrusted (a job ran after the state): renamed directories go whole, and each changed
    # file's directory is checked (rsync killed mid-file leaves its temporary file there).
    assert sorted(scan(tree, index, watermark, trusted=False)) == [
        ("changed", "keep/h", ""), ("entries", ".", ""), ("entries", "keep", ""), ("new-dir", "moved", "")]


def test_a_reused_inode_is_checked_not_trusted(tree: Path) -> None:
    """A directory the index knows by inode at another place is renamed and then verified;
    one that looks in place has its own entries checked (its ctime is new)."""
    index, watermark = index_and_watermark(tree)
    ino = (tree / "keep").stat().st_ino
    # Pretend the index had this inode as "elsewhere/keep": a rename from there, verified after.
    elsewhere = max(index) + 1
    index[elsewhere] = (index[ino][0], "elsewhere")
    index[ino] = (elsewhere, "keep")
    (tree / "keep/new").write_text("n")
    assert ("moved", "keep", "elsewhere/keep") in scan(tree, index, watermark)


def test_move_order() -> None:
    assert order_moves([("a", "b"), ("b", "a")]) == ([("b", "a")], ["b"])  # a swap: one goes whole
    assert order_moves([("p", "q"), ("r", "q/s")]) == ([("p", "q")], ["q/s"])  # into a renamed one
    assert order_moves([("1", "2"), ("2", "3"), ("3", "4")]) == ([("3", "4"), ("2", "3"), ("1", "2")], [])


def header(**changes: object) -> Header:
    boot_id, offset = statefile.boot_clock()
    values = {"watermark": time.time() - 10, "source": "/srv", "device": 1, "inode": 2, "fsid": 3, "handle": "1:aa",
              "mounts": [[".", "0:40", "/", "tmpfs", "tmpfs", "1:bb"]], "boot_id": boot_id, "boot_offset": offset,
              "index_token": "t", "destinations": {}}
    values.update(changes)
    return Header(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("changes", "interval", "reason"), [
    ({"source": "/other"}, 0.0, "another source"),
    ({"device": 9}, 0.0, "another file system"),
    ({"fsid": 9}, 0.0, "another file system"),
    ({"inode": 9}, 0.0, "another directory"),
    ({"watermark": time.time() + 3600}, 0.0, "in the future"),
    ({"boot_offset": statefile.boot_clock()[1] + 60}, 0.0, "clock went back"),
    ({}, 5.0, "older than full_resync_interval"),
    ({"mounts": []}, 0.0, "mounts at or below the source changed"),
    ({"handle": "1:cc"}, 0.0, "made or mounted anew"),
    ({"mounts": [[".", "0:40", "/", "tmpfs", "tmpfs", "1:cc"]]}, 0.0, "made or mounted anew"),
])
def test_judge_names_the_reason(changes: dict[str, object], interval: float, reason: str) -> None:
    now = header(watermark=time.time())
    with pytest.raises(StateUnusable, match=reason):
        statefile.judge(header(**changes), now, interval)
    statefile.judge(header(), now, 0.0)  # and the unchanged header passes
    # A file system without file handles is judged by its device and fsid alone.
    statefile.judge(header(handle="", mounts=[[".", "0:40", "/", "tmpfs", "tmpfs", ""]]), now, 0.0)


def test_a_source_keeps_its_handles_across_mount_namespaces_and_a_new_tmpfs_does_not(tmp_path: Path) -> None:
    # What a unit does at each start (a mount namespace of its own: new mount ids) must not
    # look like a file system mounted anew; a tmpfs made anew at the same place (recycled
    # device number and mount id) must.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to make mount namespaces and a tmpfs")
    place = tmp_path / "place"
    place.mkdir()
    script = ("import sys; from pirsyncd.source.identity import file_handle; "
              "from pirsyncd.restart.statefile import mounts_below; "
              "print(file_handle(sys.argv[1]), mounts_below(sys.argv[1])[0][-1])")
    seen = []
    for _ in range(2):
        shell = (f"mount -t tmpfs tmpfs {shlex.quote(str(place))} && mkdir {shlex.quote(str(place / 'src'))} && "
                 f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {shlex.quote(str(place))} && "
                 f"unshare -m {shlex.quote(sys.executable)} -c {shlex.quote(script)} {shlex.quote(str(place))}")
        shown = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        outer, inner = shown.stdout.splitlines()
        assert outer == inner and outer.split()[0]  # the same handles from another mount namespace
        seen.append(outer)
    assert seen[0] != seen[1]  # a tmpfs made anew: other handles


def test_state_files_round_trip_and_unreadable_ones_say_so(tmp_path: Path) -> None:
    path = str(tmp_path / "www.state")
    with pytest.raises(StateUnusable, match="no state file yet"):
        statefile.read_header(path)
    token = statefile.write_index(path, [(2, 0, ""), (5, 2, "a b")])
    statefile.write_header(path, header(index_token=token))
    assert statefile.read_header(path).index_token == token
    assert statefile.read_index(path, token) == {2: (0, ""), 5: (2, "a b")}
    with pytest.raises(StateUnusable, match="another state"):
        statefile.read_index(path, "other")
    Path(path).write_bytes(b"\x00garbage")
    with pytest.raises(StateUnusable, match="unreadable"):
        statefile.read_header(path)
    Path(path).write_text(json.dumps({"format": 99}))
    with pytest.raises(StateUnusable, match="unreadable"):
        statefile.read_header(path)


def test_a_truncated_index_is_unreadable(tmp_path: Path) -> None:
    path = str(tmp_path / "www.state")
    token = statefile.write_index(path, [(2, 0, ""), (5, 2, "a"), (6, 2, "b")])
    text = Path(path + ".dirs").read_text()
    Path(path + ".dirs").write_text("".join(text.splitlines(keepends=True)[:3]))  # cut at a line's end
    with pytest.raises(StateUnusable, match="incomplete"):
        statefile.read_index(path, token)


def test_mountinfo_escapes_are_read() -> None:
    assert statefile._unescape(r"/srv/a\040b") == "/srv/a b"


def test_entries_flow_through_pending_and_the_plan() -> None:
    pending = Pending(delay=0, full_sync_threshold=100)
    pending.add(Change(ChangeKind.ENTRIES, "d", True), now=0)
    pending.add(Change(ChangeKind.NEW_DIR, "n", True), now=0)
    pending.add(Change(ChangeKind.ENTRIES, "n/inner", True), now=0)  # subsumed by the new directory
    batch = pending.take()
    assert batch.entries == ["d"] and batch.new_dirs == ["n"]

    class Facts:
        def kind(self, path: str) -> bool | None:
            return True

    transfers = plan_transfers(batch, Facts(), Renames(), delete_missing_args=True)
    assert [(t.mode, t.own_entries) for t in transfers] == [(RunMode.CHANGES, ()), (RunMode.DELETIONS, ("d",))]
    assert deletion_parents(Facts(), [], ["n"], ["d", ".", "n/x"]) == [".", "d"]
    pending.put_back(batch, now=1, is_dir=lambda path: None if path == "d" else True)
    again = pending.take()
    assert again.removed == ["d"] and again.new_dirs == ["n"]  # a checked directory gone since: deleted


def test_an_entries_check_does_not_undo_a_removal() -> None:
    pending = Pending(delay=0, full_sync_threshold=100)
    pending.add(Change(ChangeKind.REMOVED, "d", True), now=0)
    pending.add(Change(ChangeKind.ENTRIES, "d", True), now=0)  # e.g. a skipped entries check sent again
    batch = pending.take()
    assert batch.removed == ["d"] and batch.entries == []


def test_directories_of_unknown_inode_stay_out_of_the_index() -> None:
    from pirsyncd.source.events import WatchTree

    tree = WatchTree()
    tree.add(1, "", ino=10)
    tree.add(2, "a", ino=0)  # its inode could not be read
    tree.add(3, "a/b", ino=12)
    tree.add(4, "c", ino=13)
    assert sorted(tree.directories()) == [(10, 0, ""), (13, 10, "c")]


def test_directories_sharing_an_inode_number_stay_out_of_the_index() -> None:
    from pirsyncd.restart.keeper import _unambiguous
    from pirsyncd.source.events import WatchTree

    tree = WatchTree()
    tree.add(1, "", ino=10)
    tree.add(2, "subvolume-1", ino=256)
    tree.add(3, "subvolume-2", ino=256)  # btrfs: every subvolume's root is 256
    tree.add(4, "plain", ino=20)
    assert sorted(_unambiguous(tree)) == [(10, 0, ""), (20, 10, "plain")]
