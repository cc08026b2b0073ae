"""File systems mounted inside the source (issue 22): a pseudo file system is never watched or
sent and never kept busy by us, so it unmounts; a mount or an unmount of any other file system
is noticed and that directory sent again; ``one_file_system`` keeps every mount out. Needs root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.mounts import Mounts
from tests.support.trees import snapshot, wait_for, write_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts)")


def start(tmp_path: Path, source: Path, destination: Path, *arguments: str) -> Daemon:
    return Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                  "--delay", "0", *arguments).start()


def proc_mounted_inside(source: Path, mounts: Mounts) -> None:
    """A file, and proc mounted at ``source/proc``."""
    (source / "proc").mkdir()
    write_file(source / "file", "f\n")
    mounts.mount("-t", "proc", "proc", target=source / "proc")


def assert_settled(daemon: Daemon) -> None:
    daemon.wait_synced(30)
    status = daemon.status()
    assert status.get("state") == "in-sync" and not status.get("failing"), daemon.describe()
    assert "retry in" not in daemon.log(), daemon.log()


@pytest.mark.parametrize("fstype", ["proc", "sysfs"])
def test_a_pseudo_file_system_mounted_inside_is_an_empty_directory_and_unmounts(
        tmp_path: Path, trees: tuple[Path, Path], mounts: Mounts, fstype: str) -> None:
    source, destination = trees
    write_file(source / "root" / "etc" / "hostname", "box\n")
    (source / "root" / fstype).mkdir()
    with start(tmp_path, source, destination) as daemon:
        mounts.mount("-t", fstype, fstype, target=source / "root" / fstype)
        daemon.wait_log(f"a {fstype} file system was mounted at root/{fstype}")
        write_file(source / "root" / "etc" / "after-the-mount", "written\n")
        assert_settled(daemon)
        assert (destination / "root" / "etc" / "after-the-mount").read_text() == "written\n"
        assert (destination / "root" / fstype).is_dir()
        assert os.listdir(destination / "root" / fstype) == []
        # Nothing of ours keeps it busy: a plain umount works, and the directory is mirrored again.
        mounts.unmount(source / "root" / fstype)
        write_file(source / "root" / fstype / "underneath", "mine\n")
        daemon.wait_mirrored(source, destination, 30)
        assert_settled(daemon)


def test_a_pseudo_file_system_there_at_start_is_kept_out(
        tmp_path: Path, trees: tuple[Path, Path], mounts: Mounts) -> None:
    source, destination = trees
    proc_mounted_inside(source, mounts)
    with start(tmp_path, source, destination) as daemon:
        assert set(snapshot(destination)) == {"proc", "file"}
        write_file(source / "later", "l\n")
        assert_settled(daemon)
        assert set(snapshot(destination)) == {"proc", "file", "later"}


def test_a_file_system_mounted_and_unmounted_inside_is_sent_again(
        tmp_path: Path, trees: tuple[Path, Path], mounts: Mounts) -> None:
    source, destination = trees
    write_file(source / "data" / "under-the-mount", "hidden by the mount\n")
    with start(tmp_path, source, destination) as daemon:
        mounts.mount("-t", "tmpfs", "tmpfs", target=source / "data")
        daemon.wait_log("a tmpfs file system was mounted at data")
        daemon.wait_mirrored(source, destination, 30)  # the mounted (empty) tree, not the old one
        write_file(source / "data" / "deep" / "on-the-tmpfs", "new\n")  # watched: it is seen
        daemon.wait_mirrored(source, destination, 30)
        mounts.unmount(source / "data")
        daemon.wait_mirrored(source, destination, 30)
        assert (destination / "data" / "under-the-mount").read_text() == "hidden by the mount\n"
        assert_settled(daemon)


def test_one_file_system_keeps_every_mount_out(
        tmp_path: Path, trees: tuple[Path, Path], mounts: Mounts) -> None:
    source, destination = trees
    (source / "at-start").mkdir()
    (source / "later").mkdir()
    mounts.mount("-t", "tmpfs", "tmpfs", target=source / "at-start")
    write_file(source / "at-start" / "on-the-tmpfs", "kept out\n")
    with start(tmp_path, source, destination, "--one-file-system") as daemon:
        mounts.mount("-t", "tmpfs", "tmpfs", target=source / "later")
        daemon.wait_log("it is sent again as an empty directory (another file system (one_file_system))")
        write_file(source / "later" / "on-the-second-tmpfs", "kept out\n")
        write_file(source / "mine", "sent\n")
        assert_settled(daemon)
        wait_for(lambda: (destination / "mine").exists(), 10, "a change beside the mounts was not sent")
        assert set(snapshot(destination)) == {"at-start", "later", "mine"}
    # Same thing from the full sync of a fresh start.
    subprocess.run(["rm", "-rf", "--", str(destination)], check=True)
    destination.mkdir()
    with start(tmp_path, source, destination, "--one-file-system"):
        assert set(snapshot(destination)) == {"at-start", "later", "mine"}


def test_a_warm_start_does_not_read_a_pseudo_file_system_inside(
        tmp_path: Path, trees: tuple[Path, Path], mounts: Mounts) -> None:
    source, destination = trees
    proc_mounted_inside(source, mounts)
    state = ("--state-file", str(tmp_path / "pirsyncd.state"))
    with start(tmp_path, source, destination, *state) as daemon:
        assert_settled(daemon)
    write_file(source / "changed-while-down", "c\n")
    with start(tmp_path, source, destination, *state) as daemon:
        assert daemon.status()["start"]["kind"] == "warm", daemon.describe()
        assert_settled(daemon)
        assert set(snapshot(destination)) == {"proc", "file", "changed-while-down"}
