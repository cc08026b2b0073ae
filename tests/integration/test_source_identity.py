"""The source path stops leading to the watched directory: syncing stops, the mirror is kept entry for
entry, and syncing resumes when that same directory is back (or a reload accepts the new one).

Each case is one way an operator or a crash loses a source: a bind mount lazily unmounted while the
old tree is still written to, a tmpfs unmounted, a file system mounted on top, the directory renamed
away and another created in its place. Needs root (mounts).
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.mounts import Mounts
from tests.support.trees import Entry, snapshot, wait_for, wait_until_equal, write_file
from tests.support.workload import HOSTILE_NAMES

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)")

LOST = "syncing stopped so the mirror is not wiped"
RELOAD_HINT = "if this is the source now, reload to mirror it"



def populate(root: Path) -> None:
    """Files, nested directories, hostile names and a symlink: what the mirror must keep."""
    for index in range(6):
        write_file(root / f"dir{index % 3}" / f"file{index}", f"content {index}\n")
    write_file(root / "deep" / "er" / "still" / "bottom", "bottom\n")
    for name in HOSTILE_NAMES[:12]:
        write_file(root / "hostile" / name, f"named {name!r}\n")
    write_file(root / "top-file", "top\n")
    os.symlink("top-file", root / "link")


def tmpfs_source(tmp_path: Path, mounts: Mounts) -> tuple[Path, Path]:
    """A populated source on a tmpfs of its own, and an empty destination beside it."""
    source, destination = tmp_path / "source", tmp_path / "destination"
    source.mkdir()
    destination.mkdir()
    mounts.mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", target=source)
    populate(source)
    return source, destination


def start(tmp_path: Path, source: Path, destination: Path) -> Daemon:
    """A running daemon, in sync; stopped again if it never gets there (none outlives its test)."""
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1")
    try:
        return daemon.start()
    except BaseException:
        daemon.stop()
        raise


def mirrored(daemon: Daemon, source: Path, destination: Path) -> dict[str, Entry]:
    """Wait until the destination mirrors the source and the daemon has settled; return a snapshot."""
    wait_until_equal(source, destination, 30)
    daemon.wait_synced()
    return snapshot(destination)


def wait_lost(daemon: Daemon, source: Path) -> None:
    status = daemon.wait_state("source-lost")
    assert "mirror kept" in status["status_line"], status
    daemon.wait_log(f"{LOST}; it resumes when {source} is back")


def wait_rechecked(daemon: Daemon, *words: str) -> None:
    """Wait for a re-check of the source that refused what is at its path (a line naming ``words``)."""
    def refused() -> bool:
        return any(RELOAD_HINT in line and all(word in line for word in words)
                   for line in daemon.log().splitlines())

    wait_for(refused, 30, lambda: f"no re-check refusing the source with {words}:\n{daemon.log()}")
    assert daemon.status()["state"] == "source-lost", daemon.status()


def assert_kept(destination: Path, before: dict[str, Entry], daemon: Daemon) -> None:
    after = snapshot(destination)
    assert after == before, (f"the mirror changed while the source was lost: removed "
                             f"{sorted(before.keys() - after.keys())}, added {sorted(after.keys() - before.keys())}, "
                             f"changed {sorted(k for k in before.keys() & after.keys() if before[k] != after[k])}"
                             f"\n{daemon.log()}")


def open_directory(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def write_at(directory: int, name: str, data: bytes) -> None:
    descriptor = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644, dir_fd=directory)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


def churn_old_tree(old_tree: int) -> None:
    """Deletions and new files in the tree the daemon still watches, through a descriptor:
    each one is an event, a batch to run, and a deletion that must not reach the mirror."""
    os.unlink("top-file", dir_fd=old_tree)
    shutil.rmtree("dir1", dir_fd=old_tree)
    shutil.rmtree("hostile", dir_fd=old_tree)
    write_at(old_tree, "written-after-the-loss", b"new\n")


def test_bind_mount_lazily_unmounted_while_the_old_tree_is_written(tmp_path: Path, mounts: Mounts) -> None:
    original, source, destination = tmp_path / "original", tmp_path / "source", tmp_path / "destination"
    original.mkdir()
    destination.mkdir()
    populate(original)
    write_file(source / "under-the-mount-point", "hidden while mounted\n")  # not empty once unmounted
    mounts.mount("--bind", str(original), target=source)
    with start(tmp_path, source, destination) as daemon:
        before = mirrored(daemon, source, destination)
        identity = daemon.status()["source_identity"]
        status = os.stat(original)
        assert (identity["device"], identity["inode"]) == (status.st_dev, status.st_ino), identity
        assert isinstance(identity["mount_id"], int)
        old_tree = open_directory(source)  # keeps the detached mount alive, like a busy writer
        try:
            mounts.unmount(source, lazy=True)
            churn_old_tree(old_tree)
            wait_lost(daemon, source)
            wait_rechecked(daemon, "now leads to another directory")
            write_at(old_tree, "still-written", b"more\n")
            assert_kept(destination, before, daemon)
        finally:
            os.close(old_tree)
        # The same directory mounted again is the source again: a full sync catches up.
        mounts.mount("--bind", str(original), target=source)
        wait_until_equal(source, destination, 30)
        daemon.wait_log(f"the source {source} is back")
        daemon.wait_synced()
        assert not (destination / "top-file").exists() and (destination / "still-written").exists()


@pytest.mark.fanotify_too
def test_tmpfs_source_unmounted(tmp_path: Path, mounts: Mounts) -> None:
    source, destination = tmpfs_source(tmp_path, mounts)
    with start(tmp_path, source, destination) as daemon:
        before = mirrored(daemon, source, destination)
        mounts.unmount(source)
        wait_lost(daemon, source)
        wait_rechecked(daemon, "is empty but the destination is not")  # the bare mount point
        assert_kept(destination, before, daemon)
        # Something appearing at the path later is not the source either.
        write_file(source / "appeared-later", "not the source\n")
        wait_rechecked(daemon, "now leads to another directory")
        assert_kept(destination, before, daemon)
        assert daemon.alive()


@pytest.mark.fanotify_too
def test_a_tmpfs_made_anew_at_the_source_is_not_the_source(tmp_path: Path, mounts: Mounts) -> None:
    """The kernel may give a new tmpfs the old one's device number, and its root the same inode
    number: only the file handle tells it apart. Its contents are never mirrored."""
    source, destination = tmpfs_source(tmp_path, mounts)
    with start(tmp_path, source, destination) as daemon:
        before = mirrored(daemon, source, destination)
        mounts.unmount(source)
        mounts.mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", target=source)
        write_file(source / "another-tree", "not the source\n")
        wait_lost(daemon, source)
        wait_rechecked(daemon, "now leads to another directory")
        assert_kept(destination, before, daemon)
        assert daemon.alive()


@pytest.mark.fanotify_too
def test_tmpfs_mounted_on_top_of_the_running_source(tmp_path: Path, mounts: Mounts) -> None:
    source, destination = tmp_path / "source", tmp_path / "destination"
    source.mkdir()
    destination.mkdir()
    populate(source)
    with start(tmp_path, source, destination) as daemon:
        before = mirrored(daemon, source, destination)
        old_tree = open_directory(source)  # the covered tree, still written to
        try:
            mounts.mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", target=source)
            write_file(source / "on-the-top-mount", "not empty, so only the identity tells\n")
            churn_old_tree(old_tree)
            wait_lost(daemon, source)
            wait_rechecked(daemon, "now leads to another directory")
            assert_kept(destination, before, daemon)
        finally:
            os.close(old_tree)
        mounts.unmount(source)  # the original directory shows again
        wait_until_equal(source, destination, 30)
        daemon.wait_log(f"the source {source} is back")
        daemon.wait_synced()
        assert (destination / "written-after-the-loss").exists() and not (destination / "on-the-top-mount").exists()


@pytest.mark.fanotify_too
@pytest.mark.parametrize("replacement", ["empty", "non-empty"])
def test_source_renamed_away_and_another_directory_put_in_its_place(
        tmp_path: Path, replacement: str) -> None:
    source, destination, away = tmp_path / "source", tmp_path / "destination", tmp_path / "away"
    source.mkdir()
    destination.mkdir()
    populate(source)
    with start(tmp_path, source, destination) as daemon:
        before = mirrored(daemon, source, destination)
        source.rename(away)
        source.mkdir()
        if replacement == "non-empty":
            write_file(source / "stranger" / "file", "another tree\n")
        wait_lost(daemon, source)
        # The real source changes while it is away: not mirrored now, but once it is back.
        (away / "top-file").unlink()
        shutil.rmtree(away / "dir1")
        write_file(away / "written-while-away", "while away\n")
        wait_rechecked(daemon, "is empty but the destination is not" if replacement == "empty"
                       else "now leads to another directory")
        assert_kept(destination, before, daemon)
        source.rename(tmp_path / "the-replacement")
        away.rename(source)
        wait_until_equal(source, destination, 30)
        daemon.wait_log(f"the source {source} is back")
        daemon.wait_synced()
        assert (destination / "written-while-away").exists() and not (destination / "stranger").exists()


def test_a_reload_accepts_the_directory_now_at_the_source_path(tmp_path: Path) -> None:
    source, destination, away = tmp_path / "source", tmp_path / "destination", tmp_path / "away"
    source.mkdir()
    destination.mkdir()
    populate(source)
    with start(tmp_path, source, destination) as daemon:
        before = mirrored(daemon, source, destination)
        source.rename(away)
        source.mkdir()
        write_file(source / "new-tree" / "file", "the new source\n")
        write_file(source / "top-file", "same name, new content\n")
        wait_lost(daemon, source)
        wait_rechecked(daemon, "now leads to another directory")
        assert_kept(destination, before, daemon)
        daemon.signal(signal.SIGHUP)
        wait_until_equal(source, destination, 30)
        daemon.wait_synced()
        identity = daemon.status()["source_identity"]
        assert (identity["device"], identity["inode"]) == (os.stat(source).st_dev, os.stat(source).st_ino)
        # The new directory is watched: later changes in it are mirrored.
        write_file(source / "new-tree" / "after-the-reload", "watched\n")
        (source / "top-file").unlink()
        wait_until_equal(source, destination, 30)
        daemon.wait_synced()
