"""Warm restart (issue 14): a restart sends what changed since the state file's watermark, not a
full sync, and the destination is an exact mirror again; every reason to fall back to a full sync
says so in the log and still converges.

Each daemon run has a workdir (status file, log) of its own, so its log is what that start did;
the runs of one test share one --state-file. "No full sync" means no "full sync sent" line in the
restarted daemon's log (README, "How it works").

    .venv/bin/python -m pytest tests/integration/test_warm_start.py -k "kind and parents"
    PIRSYNCD_CHURN_SEED=1234 .venv/bin/python -m pytest tests/integration/test_warm_start.py -k churn
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, overflow_the_queue, run_pirsyncd, start_with_a_small_queue
from tests.support.processes import descendant_pids
from tests.support.trees import differences, wait_for, wait_until_equal, write_file
from tests.support.workload import HOSTILE_NAMES, Workload, seed_from_environment

DELAY = "0.1"
HARD_LINKS = "--rsync-flags=--hard-links"
# The watermark lies 2 s before the moment it was taken (pirsyncd.restart.statefile.MARGIN): a tree made this
# long before a clean stop is older than the watermark that stop writes.
SETTLE = 2.6
WARM_LINE = re.compile(r"warm start: (\d+) changes? since .+ found in [0-9.]+ s")


# -- runs of one mirror ------------------------------------------------------------------------


class Runs:
    """Successive daemons of one mirror sharing one state file; each run gets a workdir of its own
    (tmp_path/runN), so its log shows only what that run did. Every daemon started here, and every
    process a killed daemon left behind, is stopped by PID at the end of the test (:func:`runs`)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.source = tmp_path / "source"
        self.destination = tmp_path / "destination"
        self.outside = tmp_path / "outside"
        for directory in (self.source, self.destination, self.outside, tmp_path / "state"):
            directory.mkdir(exist_ok=True)
        self.state_file = tmp_path / "state" / "mirror.state"
        self.daemons: list[Daemon] = []
        self.leftovers: list[int] = []

    def daemon(self, *extra: str, source: Path | None = None, destinations: tuple[Path, ...] | None = None,
               state_file: Path | None = None) -> Daemon:
        arguments = ["--source", str(source or self.source)]
        for destination in destinations or (self.destination,):
            arguments += ["--destination", str(destination)]
        arguments += ["--delay", DELAY, "--state-file", str(state_file or self.state_file), *extra]
        daemon = Daemon(self.tmp_path / f"run{len(self.daemons) + 1}", *arguments)
        self.daemons.append(daemon)
        return daemon

    def start(self, *extra: str, wait_in_sync: bool = True, **keywords: Any) -> Daemon:
        return self.daemon(*extra, **keywords).start(wait_in_sync=wait_in_sync)

    def header(self) -> dict[str, Any]:
        return read_header(self.state_file)

    def cleanup(self) -> None:
        for daemon in self.daemons:
            daemon.stop(timeout=30)
        for pid in self.leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Runs]:
    mirror = Runs(tmp_path)
    try:
        yield mirror
    finally:
        mirror.cleanup()


def read_header(state_file: Path) -> dict[str, Any]:
    with open(state_file, "rb") as stream:
        header = json.loads(stream.read())
    assert isinstance(header, dict) and isinstance(header.get("watermark"), (int, float)), header
    return header


def stop_cleanly(daemon: Daemon, state_file: Path) -> None:
    """SIGTERM, wait for the exit (status 0); the clean stop leaves a state file."""
    assert daemon.stop(timeout=30) == 0, f"the clean stop failed\n{daemon.describe()}"
    assert state_file.exists(), f"no state file after a clean stop\n{daemon.log()}"


def _running(pid: int) -> bool:
    try:
        fields = Path("/proc", str(pid), "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _command_name(pid: int) -> str:
    try:
        return Path("/proc", str(pid), "comm").read_text().strip()
    except OSError:
        return ""


def kill_hard(runs: Runs, daemon: Daemon, children: str = "left") -> None:
    """kill -9 of the daemon by its PID. ``children``: "left", its rsyncs go on as after an OOM kill
    of the daemon alone, and are waited for (then killed after a deadline); "killed", every process
    of it is killed too (SIGKILL of the whole unit, or a power cut), so an rsync dies mid-file."""
    assert daemon.process is not None and daemon.alive(), daemon.describe()
    os.kill(daemon.pid, signal.SIGSTOP)  # it cannot start another rsync while its children are listed
    descendants = descendant_pids(daemon.pid)
    runs.leftovers += descendants
    if children == "killed":
        # Frozen first, all of them, so that none sees another die and cleans up (a killed
        # rsync's partner removes its temporary file when the pipe between them breaks).
        for number in (signal.SIGSTOP, signal.SIGKILL):
            for pid in descendants:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, number)
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.process.wait(timeout=30)
    wait_for(lambda: not any(_running(pid) for pid in descendants), 60,
             lambda: f"the killed daemon's children still run: {[p for p in descendants if _running(p)]}")


def newest_ctime(*roots: Path) -> float:
    newest = 0.0
    for root in roots:
        newest = max(newest, os.lstat(root).st_ctime)
        for directory, subdirectories, files in os.walk(root):
            for name in subdirectories + files:
                newest = max(newest, os.lstat(os.path.join(directory, name)).st_ctime)
    return newest


def wait_until_older_than_a_watermark(*roots: Path) -> float:
    """Wait (with a deadline) until everything under ``roots`` is old enough to lie before the
    watermark a clean stop writes now; return the newest ctime found."""
    newest = newest_ctime(*roots)
    wait_for(lambda: time.time() > newest + SETTLE, SETTLE + 10, "the clock did not advance")
    return newest


def link_groups(root: Path) -> set[frozenset[str]]:
    """The sets of names (relative paths) that are one file, for files with more than one name."""
    groups: dict[tuple[int, int], set[str]] = {}
    for directory, _subdirectories, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            status = os.lstat(path)
            if stat.S_ISREG(status.st_mode) and status.st_nlink > 1:
                groups.setdefault((status.st_dev, status.st_ino), set()).add(os.path.relpath(path, root))
    return {frozenset(names) for names in groups.values() if len(names) > 1}


def start_lines(daemon: Daemon) -> list[str]:
    return [line for line in daemon.log().splitlines() if "warm start:" in line or "full sync at start:" in line]


def assert_settled_and_exact(daemon: Daemon, source: Path, destination: Path, *, hard_links: bool = False,
                             ignore: tuple[str, ...] = ()) -> None:
    """`pirsyncd wait` succeeds, then (no more waiting) the destination is an exact mirror,
    nothing was retried and the daemon still runs."""
    daemon.wait_synced(60)
    found = differences(source, destination, ignore)
    assert not found, ("the daemon says it is in sync but the destination differs:\n  "
                       + "\n  ".join(found[:30]) + f"\n{daemon.describe()}")
    if hard_links:
        assert link_groups(destination) == link_groups(source), (
            f"hard links differ: source {link_groups(source)} destination {link_groups(destination)}\n"
            f"{daemon.describe()}")
    log = daemon.log()
    assert "retry in" not in log, log
    daemon.assert_running()


def assert_warm(daemon: Daemon, source: Path, destination: Path, *, hard_links: bool = False,
                ignore: tuple[str, ...] = ()) -> int:
    """The start was warm (logged), no full sync ran, and the mirror is exact; return the change count."""
    assert_settled_and_exact(daemon, source, destination, hard_links=hard_links, ignore=ignore)
    log = daemon.log()
    found = WARM_LINE.search(log)
    assert found, f"no 'warm start: N changes since ... found in ... s' line:\n{log}"
    assert "full sync at start" not in log, log
    assert "full sync sent" not in log, f"a full sync ran after the restart:\n{log}"
    full_syncs = (daemon.status().get("counters") or {}).get("full_syncs") or {}
    assert sum(full_syncs.values()) == 0, f"full syncs counted after the restart: {full_syncs}"
    return int(found.group(1))


def assert_full_start(daemon: Daemon, source: Path, destination: Path, reason: str | None, *,
                      ignore: tuple[str, ...] = ()) -> None:
    """The start ran a full sync, said why (``reason`` is a substring of that line), and converged."""
    assert_settled_and_exact(daemon, source, destination, ignore=ignore)
    lines = start_lines(daemon)
    assert lines and all("full sync at start:" in line for line in lines), (
        f"expected 'full sync at start: ...{reason or ''}...', the start said: {lines}\n{daemon.log()}")
    if reason is not None:
        assert any(reason in line for line in lines), f"the reason is not {reason!r}: {lines}"
    assert "warm start:" not in daemon.log()
    assert "full sync sent" in daemon.log(), daemon.log()
    start = daemon.status().get("start")
    assert isinstance(start, dict) and start.get("kind") == "full", start
    assert isinstance(start.get("reason"), str) and (reason is None or reason in start["reason"]), start


# -- the tree, and the changes made while the daemon is down -----------------------------------


def populate(root: Path, outside: Path) -> None:
    """A small tree with one corner for each kind of change below (they do not overlap), and a
    directory staged outside the tree (to be moved in)."""
    write_file(root / "top-file", "top\n")
    write_file(root / "create" / "existing", "existing\n")
    (root / "deep").mkdir()
    for relative in ("doomed/d1", "doomed/sub/d2", "doomed/sub/deeper/d3"):
        write_file(root / "rmrf" / relative, f"{relative}\n")
    write_file(root / "delete" / "gone", "gone\n")
    write_file(root / "delete" / "kept", "kept\n")
    write_file(root / "delete" / "sub" / "gone-too", "gone too\n")
    for corner in ("rename-across/from", "rename-in-place", "rename-modify", "recreate", "nested/outer",
                   "rename-over", "rename-into-new"):
        for relative in ("x/1", "x/y/2", "x/y/z/3", "x/y/z/4"):
            write_file(root / corner / relative, f"{corner} {relative}\n")
    (root / "rename-across" / "to").mkdir()
    (root / "rename-over" / "empty").mkdir()
    write_file(root / "swap" / "left" / "l1", "left 1\n")
    write_file(root / "swap" / "left" / "sub" / "l2", "left 2\n")
    write_file(root / "swap" / "right" / "r1", "right 1\n")
    write_file(root / "swap" / "right" / "sub" / "deeper" / "r3", "right 3\n")
    write_file(root / "move-out" / "away" / "m1", "m1\n")
    write_file(root / "move-out" / "away" / "sub" / "m2", "m2\n")
    (root / "move-in").mkdir()
    write_file(root / "rewrite" / "same-size", "0123456789abcdef" * 4)
    write_file(root / "chmod" / "file", "mode\n")
    write_file(root / "chmod" / "dir" / "inside", "inside\n")
    write_file(root / "symlink" / "target-a", "a\n")
    write_file(root / "symlink" / "target-b", "b\n")
    os.symlink("target-a", root / "symlink" / "link")
    write_file(root / "hard" / "name1", "one file, two names\n")
    os.link(root / "hard" / "name1", root / "hard" / "name2")
    write_file(root / "file-to-dir" / "it", "a file for now\n")
    write_file(root / "dir-to-file" / "it" / "inside", "inside\n")
    write_file(root / "dir-to-file" / "it" / "sub" / "deeper", "deeper\n")
    write_file(root / "dir-to-symlink" / "it" / "inside", "inside\n")
    write_file(root / "file-rename" / "a" / "f", "renamed file\n")
    (root / "file-rename" / "b").mkdir()
    for index in range(6):
        write_file(root / "reuse" / f"doomed{index}" / "sub" / "f", f"doomed {index}\n")
    for relative in ("pkg/README", "pkg/pkg-1.0/setup", "pkg/pkg-1.0/src/main", "pkg/pkg-1.0/src/deep/er"):
        write_file(root / "flatten" / relative, f"{relative}\n")
    for relative in ("a/1", "a/sub/2", "a/sub/deep/3", "b/4", "b/sub/5", "b/sub/deep/6"):
        write_file(root / "onto" / relative, f"{relative}\n")
    for name in HOSTILE_NAMES[:16]:
        write_file(root / "hostile" / name, f"named {name!r}\n")
    write_file(outside / "staged" / "p1", "p1\n")
    write_file(outside / "staged" / "sub" / "p2", "p2\n")
    write_file(outside / "staged" / "sub" / "deeper" / "p3", "p3\n")


def _create(root: Path, outside: Path) -> None:
    write_file(root / "new-file", "new\n")
    write_file(root / "create" / "new-in-existing", "new here\n")
    write_file(root / "hostile" / HOSTILE_NAMES[20], "new hostile\n")


def _deep_create(root: Path, outside: Path) -> None:
    write_file(root / "a" / "b" / "c" / "d" / "file", "deep new\n")
    write_file(root / "deep" / "a" / "b" / "c" / "d" / "file", "deep in an old directory\n")


def _rm_rf(root: Path, outside: Path) -> None:
    shutil.rmtree(root / "rmrf" / "doomed")


def _delete_file(root: Path, outside: Path) -> None:
    (root / "delete" / "gone").unlink()
    (root / "delete" / "sub" / "gone-too").unlink()
    (root / "hostile" / HOSTILE_NAMES[3]).unlink()


def _rename_across(root: Path, outside: Path) -> None:
    os.rename(root / "rename-across" / "from" / "x", root / "rename-across" / "to" / "x-renamed")


def _rename_in_place(root: Path, outside: Path) -> None:
    os.rename(root / "rename-in-place" / "x", root / "rename-in-place" / "x-renamed")


def _rename_and_modify_inside(root: Path, outside: Path) -> None:
    moved = root / "rename-modify" / "x-renamed"
    os.rename(root / "rename-modify" / "x", moved)
    write_file(moved / "y" / "z" / "3", "changed after the rename, deep below\n")
    (moved / "y" / "z" / "4").unlink()
    write_file(moved / "y" / "new", "new below the renamed directory\n")


def _swap_directories(root: Path, outside: Path) -> None:
    swap = root / "swap"
    os.rename(swap / "left", swap / "between")
    os.rename(swap / "right", swap / "left")
    os.rename(swap / "between", swap / "right")


def _rename_then_recreate(root: Path, outside: Path) -> None:
    os.rename(root / "recreate" / "x", root / "recreate" / "x-old")
    write_file(root / "recreate" / "x" / "1", "a new directory at the old name\n")
    write_file(root / "recreate" / "x" / "y" / "other", "other\n")


def _nested_renames(root: Path, outside: Path) -> None:
    os.rename(root / "nested" / "outer" / "x" / "y", root / "nested" / "outer" / "x" / "y-renamed")
    os.rename(root / "nested" / "outer" / "x", root / "nested" / "outer" / "x-renamed")
    os.rename(root / "nested" / "outer", root / "nested" / "outer-renamed")


def _rename_over_empty_directory(root: Path, outside: Path) -> None:
    os.rename(root / "rename-over" / "x", root / "rename-over" / "empty")


def _rename_into_new_directory(root: Path, outside: Path) -> None:
    (root / "rename-into-new" / "new" / "deeper").mkdir(parents=True)
    os.rename(root / "rename-into-new" / "x", root / "rename-into-new" / "new" / "deeper" / "x")


def _move_out(root: Path, outside: Path) -> None:
    os.rename(root / "move-out" / "away", outside / "moved-away")


def _move_in(root: Path, outside: Path) -> None:
    """A directory made (long) before the stop outside the tree: its entries' ctimes are old."""
    os.rename(outside / "staged", root / "move-in" / "staged")


def _rewrite_same_size_old_mtime(root: Path, outside: Path) -> None:
    path = root / "rewrite" / "same-size"
    before = os.lstat(path)
    with open(path, "r+b") as stream:
        stream.write(b"fedcba9876543210" * 4)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.lstat(path).st_mtime_ns == before.st_mtime_ns and os.lstat(path).st_size == before.st_size


def _chmod(root: Path, outside: Path) -> None:
    os.chmod(root / "chmod" / "file", 0o600)
    os.chmod(root / "chmod" / "dir", 0o700)
    os.chmod(root, 0o750)


def _retarget_symlink(root: Path, outside: Path) -> None:
    link = root / "symlink" / "link"
    link.unlink()
    os.symlink("target-b", link)
    os.symlink("gone", root / "symlink" / "new-dangling")


def _write_through_second_name(root: Path, outside: Path) -> None:
    with open(root / "hard" / "name2", "r+b") as stream:
        stream.write(b"written through the second name, longer than before\n")
    os.link(root / "hard" / "name1", root / "hard" / "name3")


def _file_to_directory(root: Path, outside: Path) -> None:
    path = root / "file-to-dir" / "it"
    path.unlink()
    write_file(path / "now-a-directory", "inside\n")


def _directory_to_file(root: Path, outside: Path) -> None:
    path = root / "dir-to-file" / "it"
    shutil.rmtree(path)
    write_file(path, "a file now\n")


def _directory_to_symlink(root: Path, outside: Path) -> None:
    path = root / "dir-to-symlink" / "it"
    shutil.rmtree(path)
    os.symlink("../top-file", path)


def _rename_file(root: Path, outside: Path) -> None:
    os.rename(root / "file-rename" / "a" / "f", root / "file-rename" / "b" / "f-renamed")


def _reuse_inodes(root: Path, outside: Path) -> None:
    """Delete directories, then make new ones elsewhere until one gets an inode number of a deleted
    one (ext4 hands them out again; best effort): a new directory, not a renamed one."""
    deleted = {os.lstat(root / "reuse" / f"doomed{index}" / sub).st_ino
               for index in range(6) for sub in ("", "sub")}
    shutil.rmtree(root / "reuse")
    (root / "reuse").mkdir()
    for index in range(64):
        made = root / "reuse" / f"new{index}"
        made.mkdir()
        write_file(made / "f", f"new {index}\n")
        if os.lstat(made).st_ino in deleted:
            break


def _replace_directory_by_its_subdirectory(root: Path, outside: Path) -> None:
    """The unpacked-tarball shuffle: pkg/pkg-1.0 becomes pkg (mv pkg/pkg-1.0 tmp; rm -rf pkg; mv tmp pkg)."""
    os.rename(root / "flatten" / "pkg" / "pkg-1.0", root / "flatten" / "tmp")
    shutil.rmtree(root / "flatten" / "pkg")
    os.rename(root / "flatten" / "tmp", root / "flatten" / "pkg")


def _rename_onto_a_renamed_one(root: Path, outside: Path) -> None:
    """a takes b's name, b goes inside it (mv a tmp; mv b tmp/b-inside; mv tmp b)."""
    onto = root / "onto"
    os.rename(onto / "a", onto / "tmp")
    os.rename(onto / "b", onto / "tmp" / "b-inside")
    os.rename(onto / "tmp", onto / "b")


KINDS: dict[str, Callable[[Path, Path], None]] = {
    "create": _create,
    "deep-create": _deep_create,
    "rm-rf": _rm_rf,
    "delete-file": _delete_file,
    "rename-directory-across": _rename_across,
    "rename-directory-in-place": _rename_in_place,
    "rename-directory-then-change-inside": _rename_and_modify_inside,
    "swap-two-directories": _swap_directories,
    "rename-directory-then-recreate-old-name": _rename_then_recreate,
    "nested-renames": _nested_renames,
    "rename-directory-over-empty-one": _rename_over_empty_directory,
    "rename-directory-into-new-one": _rename_into_new_directory,
    "move-directory-out": _move_out,
    "move-old-directory-in": _move_in,
    "rewrite-same-size-old-mtime": _rewrite_same_size_old_mtime,
    "chmod-file-directory-root": _chmod,
    "retarget-symlink": _retarget_symlink,
    "write-through-second-hard-link": _write_through_second_name,
    "file-to-directory": _file_to_directory,
    "directory-to-file": _directory_to_file,
    "directory-to-symlink": _directory_to_symlink,
    "rename-file": _rename_file,
    "reuse-inodes-of-deleted-directories": _reuse_inodes,
    "replace-directory-by-its-subdirectory": _replace_directory_by_its_subdirectory,
    "rename-onto-a-renamed-one": _rename_onto_a_renamed_one,
}


def change_everything(root: Path, outside: Path) -> None:
    for change in KINDS.values():
        change(root, outside)


def settled_then_stopped(runs: Runs, *extra: str) -> Daemon:
    """Populate, mirror (a full sync: no state yet), wait until the tree is older than the watermark
    a stop writes now, stop cleanly; check the watermark lies after the tree (else a warm start
    would re-send it all and prove nothing)."""
    populate(runs.source, runs.outside)
    daemon = runs.start(*extra)
    advance_the_watermark_past_the_tree_and_stop(runs, daemon)
    return daemon


def tick(root: Path) -> None:
    """One new file, in the corner "marker" while it is a directory (a churn may have replaced it)."""
    marker = root / "marker"
    name = f"tick-{time.time_ns()}"
    write_file(marker / name if marker.is_dir() and not marker.is_symlink() else root / name, "tick\n")


def advance_the_watermark_past_the_tree(runs: Runs, daemon: Daemon) -> None:
    """While the daemon runs: wait until the tree is older than a watermark taken now, make one
    change (in a corner of its own) and wait until the daemon wrote a watermark after the tree
    (it writes when in sync after something was sent, at most every few seconds)."""
    tree = wait_until_older_than_a_watermark(runs.source, runs.outside)
    tick(runs.source)
    daemon.wait_synced()
    wait_for(lambda: runs.state_file.exists() and runs.header()["watermark"] > tree, 30,
             lambda: f"no watermark after the tree ({tree}) was written: {runs.state_file.exists() and runs.header()}")


def advance_the_watermark_past_the_tree_and_stop(runs: Runs, daemon: Daemon) -> None:
    """Wait until the tree is older than a watermark taken now; then one change (in a corner of
    its own) so that the clean stop writes a new watermark (a stop with nothing sent since the last
    write keeps the old one, which lies before the tree); stop cleanly and check."""
    tree = wait_until_older_than_a_watermark(runs.source, runs.outside)
    tick(runs.source)
    daemon.wait_synced()
    stop_cleanly(daemon, runs.state_file)
    watermark = runs.header()["watermark"]
    assert tree < watermark < time.time(), (
        f"the watermark ({watermark}) does not lie between the tree's newest ctime ({tree}) "
        f"and now ({time.time()})\n{daemon.log()}")


# -- 1. clean stop, changes of every kind while down, start again ------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_change_made_while_stopped_is_sent_by_a_warm_start(runs: Runs, kind: str) -> None:
    hard_links = kind == "write-through-second-hard-link"
    extra = (HARD_LINKS,) if hard_links else ()
    settled_then_stopped(runs, *extra)
    KINDS[kind](runs.source, runs.outside)
    daemon = runs.start(*extra)
    changes = assert_warm(daemon, runs.source, runs.destination, hard_links=hard_links)
    assert changes >= 1, daemon.log()


@pytest.mark.fanotify_too(flags=((),))  # (CI time: the hard-link case is the inotify path's)
@pytest.mark.parametrize("flags", [(), (HARD_LINKS,)], ids=["plain", "hard-links"])
def test_every_kind_of_change_at_once_while_stopped(runs: Runs, flags: tuple[str, ...]) -> None:
    settled_then_stopped(runs, *flags)
    change_everything(runs.source, runs.outside)
    daemon = runs.start(*flags)
    assert_warm(daemon, runs.source, runs.destination, hard_links=bool(flags))
    # And the next restart, with nothing changed, is warm too and sends (almost) nothing.
    stop_cleanly(daemon, runs.state_file)
    again = runs.start(*flags)
    assert_warm(again, runs.source, runs.destination, hard_links=bool(flags))


@pytest.mark.fanotify_too
def test_a_live_change_after_a_warm_start_is_mirrored(runs: Runs) -> None:
    settled_then_stopped(runs)
    _rename_across(runs.source, runs.outside)
    daemon = runs.start()
    assert_warm(daemon, runs.source, runs.destination)
    # The renamed directory is watched under its new name.
    write_file(runs.source / "rename-across" / "to" / "x-renamed" / "y" / "z" / "live", "live\n")
    shutil.rmtree(runs.source / "rename-across" / "to" / "x-renamed" / "y" / "z")
    write_file(runs.source / "move-in" / "live", "live\n")
    assert_warm(daemon, runs.source, runs.destination)


# -- 2. kill -9 after a burst, more changes while down ----------------------------------------


def burst(root: Path, big: int = 0) -> None:
    for index in range(150):
        write_file(root / "burst" / f"d{index % 10}" / f"f{index}", f"burst {index}\n" * (index % 5 + 1))
    os.rename(root / "rename-in-place" / "x", root / "rename-in-place" / "x-burst")
    shutil.rmtree(root / "rmrf" / "doomed")
    os.chmod(root / "chmod" / "file", 0o640)
    if big:
        write_file(root / "burst" / "big", random.Random(14).randbytes(big))


def changes_while_down(root: Path, outside: Path) -> None:
    for index in range(0, 150, 7):
        (root / "burst" / f"d{index % 10}" / f"f{index}").unlink()
    os.rename(root / "burst" / "d3", root / "burst" / "d3-renamed")
    os.rename(root / "rename-in-place" / "x-burst", root / "burst" / "x-from-the-burst")
    _rewrite_same_size_old_mtime(root, outside)
    _swap_directories(root, outside)
    _file_to_directory(root, outside)
    _retarget_symlink(root, outside)
    write_file(root / "burst" / "d1" / "f1", "rewritten while down\n")


def _an_rsync_runs(daemon: Daemon) -> bool:
    return any(_command_name(pid) == "rsync" for pid in descendant_pids(daemon.pid))


@pytest.mark.fanotify_too(moment=("mid-rsync",))  # (CI time: the other moments on inotify only)
@pytest.mark.parametrize("moment", ["at-once", "mid-rsync", "after-sync"])
def test_kill_9_after_a_burst_then_changes_while_down_converge_warm(runs: Runs, moment: str) -> None:
    # mid-rsync: a 4 MB file at 2 MB/s keeps an rsync running for a while (the same flags at every
    # run: they are part of what the state fingerprints).
    extra = ("--rsync-flags=--bwlimit=2000",) if moment == "mid-rsync" else ()
    populate(runs.source, runs.outside)
    daemon = runs.start(*extra)
    advance_the_watermark_past_the_tree(runs, daemon)
    burst(runs.source, big=(4 << 20) if moment == "mid-rsync" else 0)
    if moment == "mid-rsync":
        wait_for(lambda: _an_rsync_runs(daemon), 30, lambda: f"no rsync ran after the burst\n{daemon.log()}")
    elif moment == "after-sync":
        daemon.wait_synced()
    kill_hard(runs, daemon, children="left")
    assert runs.state_file.exists()
    changes_while_down(runs.source, runs.outside)
    restarted = runs.start(*extra)
    assert_warm(restarted, runs.source, runs.destination)


def test_kill_9_of_the_daemon_and_its_rsync_mid_file_converges_warm(runs: Runs) -> None:
    """The whole unit killed (or the power cut) while rsync writes a file in place of an old one:
    rsync's temporary file (.big.XXXXXX) is left in a directory whose source side did not change."""
    extra = ("--rsync-flags=--bwlimit=1000",)
    write_file(runs.source / "data" / "big", "small for now\n")
    write_file(runs.source / "data" / "sibling", "sibling\n")
    daemon = runs.start(*extra)
    advance_the_watermark_past_the_tree(runs, daemon)
    with open(runs.source / "data" / "big", "wb") as stream:  # rewritten in place: the directory is unchanged
        stream.write(random.Random(15).randbytes(3 << 20))

    def temporary_file() -> list[str]:
        return [name for name in os.listdir(runs.destination / "data") if name.startswith(".big.")]

    wait_for(temporary_file, 30, lambda: f"rsync made no temporary file\n{daemon.log()}")
    kill_hard(runs, daemon, children="killed")
    left = temporary_file()
    assert left, "the kill left no temporary file: this test tests nothing"
    restarted = runs.start(*extra)
    try:
        assert_warm(restarted, runs.source, runs.destination)
    except AssertionError as error:
        raise AssertionError(f"rsync's temporary file left by the kill: {left}\n{error}") from None


# -- 3. every reason to fall back to a full sync ------------------------------------------------


def first_run(runs: Runs, *extra: str) -> Daemon:
    """Populate, start without a state file (a full sync, saying so), stop cleanly."""
    populate(runs.source, runs.outside)
    daemon = runs.start(*extra)
    assert_full_start(daemon, runs.source, runs.destination, "no state file")
    stop_cleanly(daemon, runs.state_file)
    return daemon


def some_changes(root: Path, outside: Path) -> None:
    """A few changes while down, a renamed directory among them, so that converging needs work."""
    _create(root, outside)
    _delete_file(root, outside)
    _rename_and_modify_inside(root, outside)
    _chmod(root, outside)


@pytest.mark.fanotify_too
def test_no_state_file_is_a_full_sync_and_then_one_is_written(runs: Runs) -> None:
    populate(runs.source, runs.outside)
    assert not runs.state_file.exists()
    daemon = runs.start()
    assert_full_start(daemon, runs.source, runs.destination, "no state file")
    # Written once in sync (at most every few seconds), not only at the stop.
    wait_for(runs.state_file.exists, 30, lambda: f"no state file while in sync\n{daemon.describe()}")
    assert (runs.state_file.parent / (runs.state_file.name + ".dirs")).exists(), os.listdir(runs.state_file.parent)
    stop_cleanly(daemon, runs.state_file)
    some_changes(runs.source, runs.outside)
    assert_warm(runs.start(), runs.source, runs.destination)


@pytest.mark.fanotify_too
def test_an_overflow_removes_the_state_and_a_new_index_is_written_after_the_full_sync(runs: Runs) -> None:
    """Events were lost: the state on disk says more than is true, so it goes; the watches
    (fanotify: the directory index) are built anew, and once the full sync is over a state with
    the new index is written, from which a restart is warm."""
    populate(runs.source, runs.outside)
    daemon = start_with_a_small_queue(lambda: runs.start())
    wait_for(runs.state_file.exists, 30, lambda: f"no state file while in sync\n{daemon.describe()}")
    before = runs.header()["index_token"]
    overflow_the_queue(daemon, runs.source, runs.destination)
    daemon.wait_synced()
    wait_for(lambda: runs.state_file.exists() and runs.header()["index_token"] != before, 30,
             lambda: f"no state with a new index after the overflow\n{daemon.describe()}")
    index = (runs.state_file.parent / (runs.state_file.name + ".dirs")).read_text()
    for number in range(7):  # made just before the overflow
        inode = os.lstat(runs.source / f"d{number}").st_ino
        assert f"[{inode}, " in index, f"d{number} (inode {inode}) is not in the new index"
    stop_cleanly(daemon, runs.state_file)
    _rename_across(runs.source, runs.outside)
    assert_warm(runs.start(), runs.source, runs.destination)


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(14).randbytes(300))


def _truncated(path: Path) -> None:
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str | None]] = {
    # name: (what is done, to which file (the header or .dirs), the reason expected)
    "header-garbage-bytes": (_garbage, "", "unreadable"),
    "header-truncated": (_truncated, "", "unreadable"),
    "header-empty": (_empty, "", "unreadable"),
    "index-garbage-bytes": (_garbage, ".dirs", None),
    "index-truncated": (_truncated, ".dirs", None),
    "index-missing": (lambda path: path.unlink(), ".dirs", None),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupt_state_is_a_full_sync_and_the_next_start_is_warm(runs: Runs, corruption: str) -> None:
    damage, suffix, reason = CORRUPTIONS[corruption]
    first_run(runs)
    target = runs.state_file.parent / (runs.state_file.name + suffix)
    assert target.exists(), os.listdir(runs.state_file.parent)
    damage(target)
    some_changes(runs.source, runs.outside)
    daemon = runs.start()
    assert_full_start(daemon, runs.source, runs.destination, reason)
    stop_cleanly(daemon, runs.state_file)
    _rename_across(runs.source, runs.outside)
    assert_warm(runs.start(), runs.source, runs.destination)


@pytest.mark.parametrize("where", ["other-name", "same-name-other-path"])
def test_another_destination_is_a_full_sync(runs: Runs, tmp_path: Path, where: str) -> None:
    first_run(runs)
    other = tmp_path / "destination2" if where == "other-name" else tmp_path / "elsewhere" / "destination"
    other.mkdir(parents=True)
    some_changes(runs.source, runs.outside)
    daemon = runs.start(destinations=(other,))
    assert_full_start(daemon, runs.source, other, "another destination")
    stop_cleanly(daemon, runs.state_file)
    _rename_across(runs.source, runs.outside)
    assert_warm(runs.start(destinations=(other,)), runs.source, other)


def test_another_source_is_a_full_sync(runs: Runs, tmp_path: Path) -> None:
    first_run(runs)
    other = tmp_path / "source2"
    shutil.copytree(runs.source, other, symlinks=True)
    some_changes(other, runs.outside)
    daemon = runs.start(source=other)
    assert_full_start(daemon, other, runs.destination, "another source")


@pytest.mark.parametrize("setting", ["exclude-added", "hard-links-added"])
def test_other_settings_are_a_full_sync(runs: Runs, setting: str) -> None:
    populate(runs.source, runs.outside)
    write_file(runs.source / "create" / "old.tmp", "mirrored before the exclude\n")
    daemon = runs.start()
    assert_full_start(daemon, runs.source, runs.destination, "no state file")
    stop_cleanly(daemon, runs.state_file)
    some_changes(runs.source, runs.outside)
    extra, ignore = (("--exclude", "*.tmp"), ("*.tmp",)) if setting == "exclude-added" else ((HARD_LINKS,), ())
    write_file(runs.source / "create" / "new.tmp", "excluded\n")
    daemon = runs.start(*extra)
    assert_full_start(daemon, runs.source, runs.destination, "other settings", ignore=ignore)
    if setting == "exclude-added":
        assert not (runs.destination / "create" / "new.tmp").exists(), "an excluded file was sent"
    else:
        assert link_groups(runs.destination) == link_groups(runs.source)
    stop_cleanly(daemon, runs.state_file)
    _rename_across(runs.source, runs.outside)
    assert_warm(runs.start(*extra), runs.source, runs.destination, ignore=ignore)


def test_settings_that_do_not_change_the_mirror_keep_a_warm_start(runs: Runs) -> None:
    settled_then_stopped(runs)
    some_changes(runs.source, runs.outside)
    daemon = runs.start("--delay", "0.3", "--stop-timeout", "20", "--parallel-syncs", "2",
                        "--retry-max-interval", "30")
    assert_warm(daemon, runs.source, runs.destination)


def test_a_watermark_in_the_future_is_a_full_sync(runs: Runs) -> None:
    first_run(runs)
    header = runs.header()
    header["watermark"] = time.time() + 3600
    runs.state_file.write_text(json.dumps(header, indent=1))
    some_changes(runs.source, runs.outside)
    daemon = runs.start()
    assert_full_start(daemon, runs.source, runs.destination, "in the future")
    stop_cleanly(daemon, runs.state_file)
    assert runs.header()["watermark"] < time.time(), "the future watermark was kept"
    _rename_across(runs.source, runs.outside)
    assert_warm(runs.start(), runs.source, runs.destination)


def test_the_source_replaced_by_another_directory_is_a_full_sync(runs: Runs, tmp_path: Path) -> None:
    first_run(runs)
    some_changes(runs.source, runs.outside)
    mode = stat.S_IMODE(os.lstat(runs.source).st_mode)
    old = tmp_path / "source-old"
    os.rename(runs.source, old)
    runs.source.mkdir()
    shutil.copytree(old, runs.source, symlinks=True, dirs_exist_ok=True)  # another inode, the same content
    os.chmod(runs.source, mode)
    daemon = runs.start()
    assert_full_start(daemon, runs.source, runs.destination, "another directory")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)")
@pytest.mark.parametrize("how", ["old-one-moved-away", "old-one-unmounted"])
def test_the_source_on_another_file_system_is_a_full_sync(runs: Runs, tmp_path: Path, how: str) -> None:
    """The source is a tmpfs; while the daemon is down another tmpfs takes its place, holding the
    same content (copied). old-one-moved-away: the old one is still mounted elsewhere, so the new
    one has another device number; old-one-unmounted: the new one may get the very same device
    number, root inode and mount id back, and is still another file system."""
    mounted: list[Path] = []
    away = tmp_path / "away"
    away.mkdir()

    def mount_tmpfs() -> None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(runs.source)],
                       check=True)
        mounted.append(runs.source)

    try:
        mount_tmpfs()
        first_run(runs)
        some_changes(runs.source, runs.outside)
        copy = tmp_path / "copy"
        shutil.copytree(runs.source, copy, symlinks=True)
        before = os.lstat(runs.source)
        if how == "old-one-moved-away":
            subprocess.run(["mount", "--move", str(runs.source), str(away)], check=True)
            mounted[-1] = away
        else:
            subprocess.run(["umount", str(runs.source)], check=True)
            mounted.pop()
        mount_tmpfs()
        shutil.copytree(copy, runs.source, symlinks=True, dirs_exist_ok=True)
        os.chmod(runs.source, stat.S_IMODE(os.lstat(copy).st_mode))
        after = os.lstat(runs.source)
        daemon = runs.start()
        try:
            assert_full_start(daemon, runs.source, runs.destination, "another file system")
        except AssertionError as error:
            raise AssertionError(f"source device/inode before {before.st_dev}/{before.st_ino}, "
                                 f"after {after.st_dev}/{after.st_ino}\n{error}") from None
    finally:
        runs.cleanup()  # nothing watches the mounts when they go
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_state_older_than_full_resync_interval_is_a_full_sync(runs: Runs) -> None:
    first_run(runs, "--full-resync-interval", "1")
    some_changes(runs.source, runs.outside)
    wait_for(lambda: time.time() - runs.header()["watermark"] > 1.5, 20, "the watermark did not age")
    daemon = runs.start("--full-resync-interval", "1")
    assert_full_start(daemon, runs.source, runs.destination, "older than full_resync_interval")


def test_startup_sync_full_is_a_full_sync(runs: Runs) -> None:
    first_run(runs)
    some_changes(runs.source, runs.outside)
    daemon = runs.start("--startup-sync", "full")
    assert_full_start(daemon, runs.source, runs.destination, "startup_sync = full")
    stop_cleanly(daemon, runs.state_file)
    _rename_across(runs.source, runs.outside)
    assert_warm(runs.start(), runs.source, runs.destination)


@pytest.mark.parametrize("option", [("--startup-sync", "none"), ("--no-initial-sync",)],
                         ids=["none", "no-initial-sync"])
def test_startup_sync_none_sends_nothing_at_start(runs: Runs, option: tuple[str, ...]) -> None:
    first_run(runs)
    write_file(runs.source / "while-down", "not sent: the destination is trusted\n")
    daemon = runs.start(*option)
    daemon.wait_synced()
    log = daemon.log()
    assert "full sync sent" not in log and "warm start:" not in log, log
    assert not (runs.destination / "while-down").exists(), "startup_sync = none sent a change made while down"
    start = daemon.status().get("start")
    assert isinstance(start, dict) and start.get("kind") == "none", start
    write_file(runs.source / "live", "live\n")
    daemon.wait_synced()
    assert (runs.destination / "live").read_text() == "live\n"


# -- 4. a seeded churn with restarts at random points --------------------------------------------


@pytest.mark.fanotify_too(profile=("renames",))  # (CI time: renames are what the index must follow)
@pytest.mark.parametrize("profile", ["mixed", "renames"])
def test_a_churn_with_clean_and_kill_9_restarts_converges(runs: Runs, profile: str) -> None:
    """Six restarts at random points, SIGTERM and kill -9 in turn, changes while down and (some
    times) while it starts; before some stops the watermark is first moved past the whole tree, so
    what is renamed while down must be replayed, not found by its ctime."""
    seed = seed_from_environment(14014)
    chooser = random.Random(seed)
    workload = Workload(runs.source, seed, profile, runs.outside)

    def fail(error: AssertionError, daemon: Daemon) -> AssertionError:
        return AssertionError(f"{workload.report()}\n{error}\n--- daemon log:\n{daemon.log()[-4000:]}")

    workload.run(60)
    daemon = runs.start()
    for round_number in range(6):
        workload.run(chooser.randint(10, 60))  # while running
        how = "SIGTERM" if round_number % 2 == 0 else "SIGKILL"
        if chooser.random() < 0.5:
            workload.log.append("      --- the watermark moves past the tree")
            try:
                advance_the_watermark_past_the_tree(runs, daemon)
            except AssertionError as error:
                raise fail(error, daemon) from None
        workload.log.append(f"      --- {how} (round {round_number})")
        if how == "SIGTERM":
            stop_cleanly(daemon, runs.state_file)
        else:
            kill_hard(runs, daemon, children="left")
        assert runs.state_file.exists()
        workload.run(chooser.randint(0, 60))  # while down
        during_start = chooser.random() < 0.5
        workload.log.append(f"      --- start{' (changes while it starts)' if during_start else ''}")
        daemon = runs.daemon()
        daemon.start(wait_in_sync=not during_start)
        if during_start:
            workload.run(chooser.randint(5, 30))
            daemon.wait_state("in-sync", 60)
        try:
            wait_until_equal(runs.source, runs.destination, 60)
            assert_warm(daemon, runs.source, runs.destination)
        except AssertionError as error:
            raise fail(error, daemon) from None
    try:
        assert_warm(daemon, runs.source, runs.destination)
    except AssertionError as error:
        raise fail(error, daemon) from None


# -- 5. the status file and `pirsyncd status` ---------------------------------------------------


@pytest.mark.fanotify_too
def test_the_status_shows_a_warm_start_and_the_watermark(runs: Runs) -> None:
    settled_then_stopped(runs)
    old_watermark = runs.header()["watermark"]
    some_changes(runs.source, runs.outside)
    daemon = runs.start()
    changes = assert_warm(daemon, runs.source, runs.destination)
    start = daemon.status().get("start")
    assert isinstance(start, dict), daemon.status()
    assert start.get("kind") == "warm" and start.get("reason") is None, start
    assert isinstance(start.get("changes"), int) and start["changes"] == changes >= 1, (start, changes)
    assert isinstance(start.get("seconds"), (int, float)) and start["seconds"] >= 0, start
    # The header is written once in sync: the status shows a watermark newer than the old one.
    status = wait_for(lambda: (s := daemon.status()).get("watermark") is not None
                      and s["watermark"] > old_watermark and s, 30,
                      lambda: f"no new watermark in the status: {daemon.status()}")
    assert status["watermark"] < time.time(), status["watermark"]
    shown = run_pirsyncd("status", "--status-file", str(daemon.status_file))
    assert shown.returncode == 0, shown
    assert "watermark:" in shown.stdout and " s ago" in shown.stdout, shown.stdout
    # pirsyncd status: "last start:   warm, 37 changes found in 0.21 s".
    assert re.search(rf"last start:\s+warm, {changes} changes found in [0-9.]+ s", shown.stdout), shown.stdout


def test_the_status_shows_a_full_start_and_its_reason(runs: Runs) -> None:
    populate(runs.source, runs.outside)
    daemon = runs.start()
    assert_full_start(daemon, runs.source, runs.destination, "no state file")
    wait_for(lambda: daemon.status().get("watermark") is not None, 30,
             lambda: f"no watermark in the status once in sync: {daemon.status()}")
    shown = run_pirsyncd("status", "--status-file", str(daemon.status_file))
    assert shown.returncode == 0, shown
    assert re.search(r"last start:\s+full sync \(.*no state file", shown.stdout), shown.stdout


# -- several destinations --------------------------------------------------------------------------


@pytest.mark.fanotify_too
def test_several_destinations_start_warm_and_a_new_one_gets_a_full_sync(runs: Runs, tmp_path: Path) -> None:
    web1, web2, web3 = (tmp_path / name for name in ("web1", "web2", "web3"))
    for directory in (web1, web2, web3):
        directory.mkdir()
    populate(runs.source, runs.outside)
    daemon = runs.start(destinations=(web1, web2))
    advance_the_watermark_past_the_tree_and_stop(runs, daemon)
    change_everything(runs.source, runs.outside)
    daemon = runs.start(destinations=(web1, web2))
    daemon.wait_synced()
    for web in (web1, web2):
        assert differences(runs.source, web) == [], f"{web.name}: {differences(runs.source, web)}\n{daemon.log()}"
    log = daemon.log()
    assert "full sync sent" not in log and "full sync at start" not in log, log
    for name in ("web1", "web2"):
        assert re.search(rf"{name}: warm start: \d+ changes", log), log
    stop_cleanly(daemon, runs.state_file)

    os.rename(runs.source / "rename-across" / "to" / "x-renamed", runs.source / "rename-across" / "from" / "x-back")
    daemon = runs.start(destinations=(web1, web2, web3))
    daemon.wait_synced()
    for web in (web1, web2, web3):
        assert differences(runs.source, web) == [], f"{web.name}: {differences(runs.source, web)}\n{daemon.log()}"
    lines = daemon.log().splitlines()
    assert any("web3: full sync at start:" in line and "another destination" in line for line in lines), lines
    for name in ("web1", "web2"):
        assert any(f"{name}: warm start:" in line for line in lines), lines
        assert not any(f"{name}: full sync sent" in line for line in lines), lines
    assert any("web3: full sync sent" in line for line in lines), lines
    assert "retry in" not in daemon.log()


# -- what a review found ----------------------------------------------------------------------------


@pytest.mark.fanotify_too
def test_a_late_event_lowers_the_watermark_on_disk(runs: Runs) -> None:
    """An mmap write stamps the ctime at the first write but its only event comes at close: once that
    event is read, the watermark on disk must not lie past the change, or a kill -9 before it is sent
    would leave it out of the next warm start for good."""
    import mmap

    write_file(runs.source / "db", "0" * 4096)
    daemon = runs.start("--delay", "2")  # the late change is read, then waits: a kill finds it unsent
    daemon.wait_synced()
    with open(runs.source / "db", "r+b") as stream, mmap.mmap(stream.fileno(), 4096) as mapped:
        mapped[:5] = b"MMAP!"
        changed = os.stat(runs.source / "db").st_ctime
        # Let a watermark pass the change while the map is open (another change gets it written).
        tick(runs.source)
        daemon.wait_synced()
        wait_for(lambda: runs.state_file.exists() and runs.header()["watermark"] > changed, 30,
                 lambda: f"no watermark past the mmap write: {runs.state_file.exists() and runs.header()}")
    # The close's event: the daemon reads it and must bring the watermark down before sending.
    wait_for(lambda: runs.header()["watermark"] < changed, 30,
             lambda: f"the watermark on disk stayed past the late change: {runs.header()} > {changed}")
    kill_hard(runs, daemon, children="killed")
    restarted = runs.start()
    assert_warm(restarted, runs.source, runs.destination)


def test_a_reload_that_changes_what_the_mirror_holds_runs_a_full_sync(runs: Runs) -> None:
    config = runs.tmp_path / "mirror.conf"

    def write_config(extra: str) -> None:
        config.write_text(f"[sync]\nsource = {runs.source}\ndestination = {runs.destination}\ndelay = {DELAY}\n"
                          f"state_file = {runs.state_file}\n[rsync]\n{extra}")

    write_config("max_size = 1K\n")
    write_file(runs.source / "big", "x" * 5000)
    write_file(runs.source / "small", "small\n")
    daemon = Daemon(runs.tmp_path / "reloaded", "--config", str(config))
    runs.daemons.append(daemon)
    daemon.start()
    daemon.wait_synced()
    assert not (runs.destination / "big").exists()
    write_config("")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: (runs.destination / "big").exists(), 30,
             lambda: f"the reload without max_size sent no full sync\n{daemon.log()}")
    stop_cleanly(daemon, runs.state_file)
    restarted = Daemon(runs.tmp_path / "after", "--config", str(config))
    runs.daemons.append(restarted)
    restarted.start()
    assert_warm(restarted, runs.source, runs.destination)


def test_restarts_do_not_put_off_the_periodic_full_sync(runs: Runs) -> None:
    """full_resync_interval stays the safety net for changes at the destination: restarts more often
    than the interval (each one starting its timer anew) must not put the full sync off for ever."""
    interval = ("--full-resync-interval", "8")
    write_file(runs.source / "file", "source\n")
    first = runs.start(*interval)
    first.wait_synced()
    full_at = time.time()
    stop_cleanly(first, runs.state_file)
    wait_for(lambda: time.time() - full_at > 4, 10, "half the interval to pass")
    second = runs.start(*interval)  # warm: the last full sync is recent
    assert any("warm start:" in line for line in start_lines(second)), second.log()
    tick(runs.source)
    second.wait_synced()
    stop_cleanly(second, runs.state_file)
    wait_for(lambda: time.time() - full_at > 8.5, 10, "the interval to pass since the full sync")
    assert time.time() - runs.header()["watermark"] < 8, "the watermark itself is fresh: not that fallback"
    (runs.destination / "file").write_text("changed at the destination\n")  # only a full sync repairs it
    third = runs.start(*interval)
    assert_full_start(third, runs.source, runs.destination, "a full sync is due")
