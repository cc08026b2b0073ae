"""The fanotify mark's privilege, given up once the mark is placed: a daemon run as nobody with
CAP_SYS_ADMIN, CAP_SETPCAP and CAP_DAC_READ_SEARCH as ambient capabilities (what the shipped
systemd drop-in grants the pirsyncd user; setpriv here) watches with fanotify, then holds
CAP_DAC_READ_SEARCH alone in every set, mirrors, keeps its mark through a queue overflow and a
reload, and exits with status 80 when the source's file system is mounted again (a restart
places the new mark); without CAP_SETPCAP the bounding set keeps the bit; a daemon run as root
keeps CAP_SYS_ADMIN and places the new mark itself. Needs root (mounts, setpriv)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pirsyncd.config import exitcodes
from pirsyncd.source.capabilities import CAP_DAC_READ_SEARCH, CAP_SETPCAP, CAP_SYS_ADMIN, SETS, read_capabilities
from tests.support import backends
from tests.support.daemon import Daemon, overflow_the_queue, start_with_a_small_queue
from tests.support.mounts import Mounts
from tests.support.processes import fanotify_marked_devices
from tests.support.trees import wait_until_equal, write_file

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, setpriv)"),
              pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)")]

NOBODY = pwd.getpwnam("nobody")
GAVE_UP = "the fanotify mark is placed: gave up CAP_SYS_ADMIN"


def granted(*capabilities: str) -> list[str]:
    """setpriv's argv prefix: run as nobody with ``capabilities`` inheritable and ambient (so
    effective and permitted after the exec), as systemd's AmbientCapabilities= does."""
    caps = ",".join(f"+{name}" for name in capabilities)
    return ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}", "--"]


THE_DROP_IN_S = granted("sys_admin", "setpcap", "dac_read_search")


@pytest.fixture
def trees(tmp_path: Path, mounts: Mounts) -> Iterator[tuple[Path, Path]]:
    """A source on a tmpfs of its own (the mark sees this test's events only) and a destination
    nobody may write; fanotify the backend of the test's daemons (the skip says why not)."""
    source, destination = tmp_path / "source", tmp_path / "destination"
    for directory in (source, destination):
        directory.mkdir()
    mounts.mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", target=source)
    refusal = backends.fanotify_refusal(source)
    if refusal is not None:
        pytest.skip(f"fanotify filesystem marks are not possible here: {refusal}")
    os.chown(destination, NOBODY.pw_uid, NOBODY.pw_gid)
    with backends.using(backends.FANOTIFY):
        yield source, destination


def daemon_as(prefix: list[str] | None, workdir: Path, *arguments: str) -> Daemon:
    """A daemon (``prefix``: as nobody, with its grant; None: as root) whose workdir is writable
    by nobody."""
    workdir.mkdir(parents=True)
    os.chown(workdir, NOBODY.pw_uid, NOBODY.pw_gid)
    return Daemon(workdir, *arguments, "--delay", "0.1", prefix=prefix)


def sets_holding(pid: int, bit: int) -> list[str]:
    return read_capabilities(pid).holding(bit)


def fanotify_descriptors(pid: int) -> set[str]:
    """The descriptor numbers of the fanotify groups process ``pid`` holds."""
    return {name for name in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{name}") == "anon_inode:[fanotify]"}


def test_a_worker_granted_the_mark_s_privilege_gives_it_up_mirrors_and_keeps_its_mark_on_reload(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    config = tmp_path / "www.conf"
    config.write_text(f"[sync]\nsource = {source}\ndestination = {destination}\nexclude = *.tmp\n"
                      "watch_backend = fanotify\n")
    write_file(source / "at-start", "start\n")
    with daemon_as(THE_DROP_IN_S, tmp_path / "daemon", "--config", str(config)).start() as daemon:
        assert sets_holding(daemon.pid, CAP_SYS_ADMIN) == [] and sets_holding(daemon.pid, CAP_SETPCAP) == [], (
            read_capabilities(daemon.pid))
        assert sets_holding(daemon.pid, CAP_DAC_READ_SEARCH) == list(SETS), read_capabilities(daemon.pid)
        daemon.wait_log(f"{GAVE_UP} and CAP_SETPCAP (kept CAP_DAC_READ_SEARCH, to make handles into paths)\n")
        write_file(source / "a" / "b" / "new", "nested\n")
        (source / "at-start").rename(source / "a" / "moved")
        write_file(source / "skipped.tmp", "excluded\n")
        wait_until_equal(source, destination, 30, ignore={"skipped.tmp"})
        groups = fanotify_descriptors(daemon.pid)
        config.write_text(config.read_text().replace("exclude = *.tmp\n", ""))
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reloaded the configuration")
        assert fanotify_descriptors(daemon.pid) == groups, "the reload placed a new mark"
        wait_until_equal(source, destination, 30)
        write_file(source / "a" / "after-the-reload", "seen\n")
        wait_until_equal(source, destination, 30)
        assert daemon.status()["watch_backend"] == "fanotify"


def test_without_the_privilege_an_overflow_keeps_the_mark_and_converges(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    daemon = start_with_a_small_queue(lambda: daemon_as(
        THE_DROP_IN_S, tmp_path / "daemon", "--source", str(source), "--destination", str(destination)).start())
    with daemon:
        groups = fanotify_descriptors(daemon.pid)
        overflow_the_queue(daemon, source, destination)  # a full sync: the mirror whole again
        assert fanotify_descriptors(daemon.pid) == groups, "the overflow placed a new mark"
        assert "the source" not in (daemon.status().get("warning") or ""), daemon.status()
        (source / "d0").rename(source / "renamed")
        write_file(source / "renamed" / "after-the-overflow", "seen\n")
        wait_until_equal(source, destination, 30)
        assert sets_holding(daemon.pid, CAP_SYS_ADMIN) == []


def test_without_cap_setpcap_the_bounding_set_keeps_the_bit(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """PR_CAPBSET_DROP needs CAP_SETPCAP: without it the bit stays in the bounding set alone
    (inert under NoNewPrivileges=), and the log says so."""
    source, destination = trees
    with daemon_as(granted("sys_admin", "dac_read_search"), tmp_path / "daemon", "--source", str(source),
                   "--destination", str(destination)).start() as daemon:
        assert sets_holding(daemon.pid, CAP_SYS_ADMIN) == ["CapBnd"], read_capabilities(daemon.pid)
        daemon.wait_log(f"{GAVE_UP} (kept CAP_DAC_READ_SEARCH, to make handles into paths); left in the bounding "
                        "set, inert under NoNewPrivileges: CAP_SYS_ADMIN in CapBnd")
        write_file(source / "file", "x\n")
        wait_until_equal(source, destination, 30)


@pytest.fixture
def ext4_source(tmp_path: Path, mounts: Mounts) -> Iterator[tuple[Path, list[str]]]:
    """An ext4 file system on a loop device attached here (so that it is the same device, and
    the source the same directory, each time it is mounted), mounted at tmp_path/source; and
    the mount command that mounts it again there."""
    if not shutil.which("mkfs.ext4") or not os.path.exists("/dev/loop-control"):
        pytest.skip("needs mkfs.ext4 and loop devices")
    image, source = tmp_path / "ext4.img", tmp_path / "source"
    source.mkdir()
    with open(image, "wb") as file:
        file.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                            check=True).stdout.strip()
    try:
        mounts.mount(device, target=source)
        shutil.rmtree(source / "lost+found")
        yield source, [device]
    finally:
        mounts.unmount_everything()
        subprocess.run(["losetup", "-d", device], check=False)


@pytest.mark.parametrize("user", ["nobody-granted", "root"])
def test_the_source_s_file_system_mounted_again_needs_a_new_mark(
        tmp_path: Path, mounts: Mounts, ext4_source: tuple[Path, list[str]], user: str) -> None:
    """Unmounted, the source is lost (nothing deleted); mounted again, the mark is gone with the
    old file system. A worker that gave up CAP_SYS_ADMIN exits with 80 (systemd starts it
    again: its full sync catches up); one running as root places the new mark itself."""
    source, device = ext4_source
    destination = tmp_path / "destination"
    destination.mkdir()
    os.chown(destination, NOBODY.pw_uid, NOBODY.pw_gid)
    prefix = THE_DROP_IN_S if user == "nobody-granted" else None
    write_file(source / "before", "1\n")
    with backends.using(backends.FANOTIFY):
        first = daemon_as(prefix, tmp_path / "first", "--source", str(source), "--destination", str(destination))
        with first.start():
            assert bool(sets_holding(first.pid, CAP_SYS_ADMIN)) == (user == "root")
            mounts.unmount(source)
            first.wait_log("syncing stopped so the mirror is not wiped")
            mounts.mount(*device, target=source)
            write_file(source / "while-away", "2\n")
            if user == "root":
                first.wait_log(f"the source {source} is back")
                wait_until_equal(source, destination, 30)
                write_file(source / "after", "seen by the new mark\n")
                wait_until_equal(source, destination, 30)
                assert os.stat(source).st_dev in fanotify_marked_devices(first.pid)
                return
            assert first.wait_exit() == exitcodes.NEW_MARK == 80
        errors = [line for line in first.log().splitlines() if "fanotify mark does not cover" in line]
        assert errors == [f"pirsyncd: the source {source} is back on a file system the fanotify mark does not cover "
                          "(mounted again?), and this worker gave up CAP_SYS_ADMIN after placing its mark: exiting so "
                          "that it is started again (systemd's Restart=on-failure does) to place a new one"], (
            first.log())
        assert "Traceback" not in first.log()
        with daemon_as(prefix, tmp_path / "second", "--source", str(source), "--destination",
                       str(destination)).start() as second:
            wait_until_equal(source, destination, 30)
            assert sets_holding(second.pid, CAP_SYS_ADMIN) == []


def test_another_file_system_at_the_source_s_path_is_not_a_reason_to_restart(
        tmp_path: Path, mounts: Mounts, trees: tuple[Path, Path]) -> None:
    """A worker that gave up CAP_SYS_ADMIN and finds another directory where its source was (a
    new tmpfs) stays lost and keeps the mirror, as always: a restart would take that directory
    for the source."""
    source, destination = trees
    write_file(source / "kept", "mirrored\n")
    with daemon_as(THE_DROP_IN_S, tmp_path / "daemon", "--source", str(source), "--destination",
                   str(destination)).start() as daemon:
        # Mounted while the source's is, so that it gets another device number (a tmpfs made
        # after the source's is gone may get its number again, and then the same identity).
        other = tmp_path / "other"
        other.mkdir()
        mounts.mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", target=other)
        write_file(other / "stranger", "another tree\n")
        mounts.unmount(source)
        daemon.wait_log("syncing stopped so the mirror is not wiped")
        mounts.mount("--move", str(other), target=source)
        daemon.wait_log("now leads to another directory")
        assert daemon.alive() and daemon.status()["state"] == "source-lost", daemon.describe()
        assert sorted(os.listdir(destination)) == ["kept"]
