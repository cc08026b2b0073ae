"""Faults: the mirror converges afterwards, and nothing is wiped on the way.

The faults that are not about inotify itself run with ``watch_backend = fanotify`` too (marked
``fanotify_too``), and fanotify has faults of its own at the end: its queue overflowing under a
churn, the source's file system unmounted and mounted again, an event storm elsewhere on the
marked file system.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.support import backends
from tests.support.daemon import Daemon, run_pirsyncd, start_with_a_small_queue
from tests.support.fakes import FAKE_RSYNC
from tests.support.mounts import Mounts
from tests.support.trees import differences, snapshot, wait_for, wait_until_equal, write_file
from tests.support.workload import Workload

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, sysctls)")


def start(tmp_path: Path, source: Path, destination: Path, *extra: str, env: dict[str, str] | None = None) -> Daemon:
    return Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                  "--delay", "0.1", "--retry-max-interval", "2", *extra, env=env).start()


@pytest.mark.fanotify_too
def test_sigkill_in_the_middle_of_a_workload_then_restart(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    outside = tmp_path / "outside"
    outside.mkdir()
    workload = Workload(source, 77, "mixed", outside)
    workload.run(100)
    daemon = start(tmp_path, source, destination)
    workload.run(150)
    daemon.kill()
    workload.run(150)  # while nothing watches
    restarted = Daemon(tmp_path / "daemon2", "--source", str(source), "--destination", str(destination),
                       "--delay", "0.1").start()
    with restarted:
        workload.run(100)
        try:
            wait_until_equal(source, destination, 60)
        except AssertionError as error:
            raise AssertionError(f"{workload.report()}\n{error}") from None


@pytest.mark.fanotify_too
@needs_root
def test_destination_read_only_for_a_while(tmp_path: Path, trees: tuple[Path, Path],
                                           mounts: Mounts) -> None:
    source, destination = trees
    write_file(source / "before", "before\n")
    with start(tmp_path, source, destination) as daemon:
        wait_until_equal(source, destination, 20)
        mounts.make_read_only(destination)
        write_file(source / "during" / "file", "during\n")
        status = daemon.wait_state("retrying", 30)
        assert status["last_error"]["rsync_status"] != 0
        assert status["pending"] > 0
        mounts.unmount(destination, lazy=True)
        wait_until_equal(source, destination, 30)
        assert daemon.status()["state"] == "in-sync" or daemon.wait_state("in-sync")


@pytest.mark.fanotify_too
@needs_root
def test_destination_file_system_full_then_space_freed(tmp_path: Path, trees: tuple[Path, Path],
                                                       mounts: Mounts) -> None:
    source, destination = trees
    mounts.mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", target=destination)
    with start(tmp_path, source, destination) as daemon:
        for index in range(4):
            write_file(source / f"big{index}", os.urandom(1024 * 1024))
        status = daemon.wait_state("retrying", 30)
        assert status["last_error"]["rsync_status"] in (11, 12, 23), status
        daemon.wait_log("rsync status")
        mounts.mount("-o", "remount,size=64m", target=destination)
        wait_until_equal(source, destination, 30)


@pytest.mark.fanotify_too
@needs_root
def test_failed_files_status_23_are_kept_and_retried(tmp_path: Path, trees: tuple[Path, Path],
                                                     mounts: Mounts) -> None:
    source, destination = trees
    (source / "locked").mkdir()
    write_file(source / "free", "free\n")
    with start(tmp_path, source, destination) as daemon:
        wait_until_equal(source, destination, 20)
        target = destination / "locked"
        mounts.make_read_only(target)
        write_file(source / "locked" / "cannot-land-yet", "x\n")
        write_file(source / "free-2", "lands at once\n")
        wait_for(lambda: (destination / "free-2").exists(), 20, "the writable part was not sent")
        wait_for(lambda: (daemon.status().get("last_error") or {}).get("rsync_status") == 23, 20,
                 lambda: f"no status 23 reported: {daemon.status()}")
        mounts.unmount(target, lazy=True)
        wait_until_equal(source, destination, 30)


def test_vanished_files_status_24_are_sent_again(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """A fake rsync that exits 24 without sending anything the first time a batch runs."""
    source, destination = trees
    marker = tmp_path / "fake-rsync-done"
    with start(tmp_path, source, destination, "--rsync-binary", str(FAKE_RSYNC),
               env={"FAKE_RSYNC_BATCH": "vanish", "FAKE_RSYNC_BATCH_ONCE": str(marker)}) as daemon:
        write_file(source / "first", "1\n")
        wait_until_equal(source, destination, 20)
        assert marker.exists()
        assert "status 24" in daemon.log()


@pytest.mark.fanotify_too
def test_source_root_renamed_away_keeps_the_mirror(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    write_file(source / "a" / "precious", "keep\n")
    with start(tmp_path, source, destination) as daemon:
        wait_until_equal(source, destination, 20)
        source.rename(tmp_path / "elsewhere")
        status = daemon.wait_state("source-lost")
        assert "source" in status["status_line"]
        shutil.rmtree(tmp_path / "elsewhere" / "a")  # must not reach the mirror
        (tmp_path / "elsewhere").rename(source)
        write_file(source / "b", "b\n")
        daemon.wait_state("in-sync", 30)
    assert differences(source, destination) == []


@pytest.mark.fanotify_too
def test_a_file_still_being_written_when_the_delay_expires(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    with Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                "--delay", "0").start() as daemon:
        chunk = os.urandom(256 * 1024)
        with open(source / "growing", "wb") as stream:
            for index in range(40):
                stream.write(chunk)
                stream.flush()
                if index == 5:
                    wait_for(lambda: (destination / "growing").exists(), 20, "no early batch of the file")
        wait_until_equal(source, destination, 20)
        daemon.wait_synced()


@needs_root
def test_watch_limit_reached_keeps_mirroring_by_full_syncs(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    for index in range(40):
        (source / f"dir{index}").mkdir()
    knob = Path("/proc/sys/fs/inotify/max_user_watches")
    original = knob.read_text()
    in_use = sum(_inotify_watches(fdinfo) for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"))
    knob.write_text(f"{in_use + 10}\n")
    try:
        daemon = start(tmp_path, source, destination, "--full-resync-interval", "1")
    finally:
        knob.write_text(original)
    with daemon:
        daemon.wait_log("fs.inotify.max_user_watches")
        assert "sysctl -w fs.inotify.max_user_watches=" in daemon.log()
        assert "unwatched" in (daemon.status().get("warning") or "")
        for index in range(40):
            write_file(source / f"dir{index}" / "late", f"{index}\n")
        wait_until_equal(source, destination, 30)
        assert daemon.alive()


def _inotify_watches(fdinfo: Path) -> int:
    try:
        return sum(1 for line in fdinfo.read_text().splitlines() if line.startswith("inotify wd:"))
    except OSError:
        return 0


def test_stop_signal_twice_stops_at_once(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """The first SIGTERM waits for the running rsync (here one that hangs, with stop_timeout 600 s
    and a time limit of an hour); the second stops it at once, long before stop_timeout."""
    source, destination = trees
    started = tmp_path / "hanging-rsync-started"
    with start(tmp_path, source, destination, "--rsync-binary", str(FAKE_RSYNC), "--stop-timeout", "600",
               "--time-limit", "3600", env={"FAKE_RSYNC_BATCH": "hang", "FAKE_RSYNC_BATCH_STARTED": str(started)}
               ) as daemon:
        write_file(source / "sent-by-a-hanging-rsync")
        wait_for(started.exists, 30, lambda: f"the batch rsync never ran:\n{daemon.log()}")
        daemon.signal(signal.SIGTERM)
        daemon.wait_state("stopping", 30)  # and still running: waiting for the hung rsync
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(60) == 0, daemon.describe()


@pytest.mark.auto_deletion_mode  # about the deletion path itself: pirsyncd's own probe decides
def test_rsync_builds_with_broken_delete_missing_args_fall_back(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """Some rsync builds fail --delete-missing-args with --files-from ('invalid file mode 00'):
    deletions then go by re-checking the parent directories, and still reach the mirror."""
    source, destination = trees
    for index in range(5):
        write_file(source / "dir" / f"f{index}", f"{index}\n")
    with start(tmp_path, source, destination, "--rsync-binary", str(FAKE_RSYNC),
               env={"FAKE_RSYNC_NO_DELETE_MISSING_ARGS": "1"}) as daemon:
        (source / "dir" / "f1").unlink()
        shutil.rmtree(source / "dir")
        write_file(source / "kept", "kept\n")
        wait_until_equal(source, destination, 30)
        assert "mishandles --delete-missing-args" in daemon.log()


def probing_daemon(tmp_path: Path, source: Path, destination: Path) -> tuple[Daemon, Path, Path]:
    """A daemon on deletion_mode auto whose rsync notes each argv; its TMPDIR (where the
    probe's scratch directory goes) is the test's own."""
    calls, scratch = tmp_path / "rsync-calls", tmp_path / "tmp"
    scratch.mkdir()
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0", "--rsync-binary", str(FAKE_RSYNC),
                    env={"TMPDIR": str(scratch), "FAKE_RSYNC_CALLS": str(calls)})
    return daemon, calls, scratch


def probe_runs(calls: Path) -> tuple[int, int]:
    """(rsync --version runs, probe transfers) noted so far."""
    lines = calls.read_text().splitlines() if calls.exists() else []
    return (sum(line == "--version" for line in lines),
            sum("--delete-missing-args" in line and "pirsyncd-probe-" in line for line in lines))


@pytest.mark.auto_deletion_mode
def test_the_rsync_is_probed_once_at_start_not_on_the_first_change(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """The probe of the rsync (its version, a tiny transfer) starts with the daemon, beside the
    watch walk, so that the first change does not wait for it: its answer is logged before any
    change, it runs once, and its scratch directory is removed."""
    source, destination = trees
    daemon, calls, scratch = probing_daemon(tmp_path, source, destination)
    with daemon.start():
        daemon.wait_state("in-sync", 30)
        wait_for(lambda: probe_runs(calls) == (1, 1), 30, lambda: f"no probe before any change: {probe_runs(calls)}")
        # Its answer is in the journal before any change (the path in use is logged at start).
        wait_for(lambda: "--delete-missing-args" in daemon.log(), 30, lambda: f"not logged:\n{daemon.log()}")
        write_file(source / "first-change", "x\n")
        wait_until_equal(source, destination, 30)
        write_file(source / "second-change", "y\n")
        wait_until_equal(source, destination, 30)
        assert probe_runs(calls) == (1, 1)
        wait_for(lambda: not list(scratch.iterdir()), 30, lambda: f"left behind: {list(scratch.iterdir())}")


@pytest.mark.auto_deletion_mode
def test_a_probe_no_batch_took_is_reaped_at_stop(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    write_file(source / "present", "x\n")
    daemon, calls, scratch = probing_daemon(tmp_path, source, destination)
    with daemon.start():
        daemon.wait_state("in-sync", 30)
        wait_for(lambda: probe_runs(calls) == (1, 1), 30, lambda: f"no probe at start: {probe_runs(calls)}")
        assert daemon.stop() == 0, daemon.describe()
    assert not list(scratch.iterdir())
    assert differences(source, destination) == []


def test_a_hung_rsync_is_killed_at_the_time_limit_and_retried(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    marker = tmp_path / "hung-once"
    with start(tmp_path, source, destination, "--rsync-binary", str(FAKE_RSYNC), "--time-limit", "1",
               env={"FAKE_RSYNC_BATCH": "hang", "FAKE_RSYNC_BATCH_ONCE": str(marker)}) as daemon:
        write_file(source / "after-the-hang", "sent on retry\n")
        wait_until_equal(source, destination, 30)
        assert marker.exists()
        assert "rsync ran longer than time_limit" in daemon.log()


def test_max_delete_holds_the_sync_until_a_reload(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    for index in range(10):
        write_file(source / f"f{index}", f"{index}\n")
    config = tmp_path / "www.conf"
    config.write_text(f"[sync]\nsource = {source}\ndestination = {destination}\ndelay = 0.1\nmax_delete = 3\n")
    daemon = Daemon(tmp_path / "daemon", "--config", str(config)).start()
    with daemon:
        for index in range(10):
            (source / f"f{index}").unlink()
        status = daemon.wait_state("held", 30)
        assert "max_delete" in status["warning"]
        remaining = len(list(destination.iterdir()))
        assert remaining >= 7, "the guard let more than max_delete deletions through"
        write_file(source / "new-while-held", "x\n")
        daemon.wait_log("sync held")
        # Held: not in sync within 3 s (a retry, due after 1 s, would have eaten the guard).
        waited = run_pirsyncd("wait", "--status-file", str(daemon.status_file), "--timeout", "3")
        assert waited.returncode == 75, waited.stderr
        assert len(list(destination.iterdir())) == remaining
        config.write_text(config.read_text().replace("max_delete = 3", "max_delete = 100"))
        daemon.signal(signal.SIGHUP)
        wait_until_equal(source, destination, 30)


# -- faults of the fanotify path ---------------------------------------------------------------------

def rsync_runs(daemon: Daemon) -> int:
    """The rsync runs the daemon has made so far (every kind and result: the status file's counters)."""
    return sum(count for *_kind, count in (daemon.status().get("counters") or {}).get("runs", []))


def assert_settles(daemon: Daemon, workload: Workload, source: Path, destination: Path) -> None:
    """In sync as ``pirsyncd wait`` says, the trees equal; a change made now is sent with nothing
    retried; the source watched (the mark on its file system, under fanotify)."""
    try:
        daemon.assert_in_sync(source, destination, 60)
        daemon.assert_settled(source / "after-the-fault", destination / "after-the-fault")
        daemon.assert_watching(source)
    except AssertionError as error:
        raise AssertionError(f"{workload.report()}\n{error}") from None


@needs_root
@pytest.mark.parametrize("watch_backend", [backends.FANOTIFY], indirect=True)
def test_fanotify_queue_overflow_under_churn(tmp_path: Path, trees: tuple[Path, Path], watch_backend: str) -> None:
    """fs.fanotify.max_queued_events is 64 while the daemon starts (the queue of the group it makes
    holds that many; the setting is put back at once, also on failure, so that the other daemons
    on the machine keep theirs): a seeded churn while it cannot read overflows it, a full sync
    catches up, and the churn after it is still seen."""
    source, destination = trees
    outside = tmp_path / "outside"
    outside.mkdir()
    workload = Workload(source, 2707, "mixed", outside)
    workload.run(50)
    daemon = start_with_a_small_queue(lambda: start(tmp_path, source, destination))
    with daemon:
        daemon.signal(signal.SIGSTOP)
        try:
            workload.run(300)
        finally:
            daemon.signal(signal.SIGCONT)
        daemon.wait_log("fanotify queue overflowed")
        workload.run(100)
        assert_settles(daemon, workload, source, destination)


@needs_root
@pytest.mark.skipif(not (os.path.exists("/dev/loop-control") and shutil.which("mkfs.ext4")),
                    reason="needs loop devices and mkfs.ext4 (e2fsprogs)")
@pytest.mark.fanotify_too
def test_source_file_system_unmounted_and_mounted_again(tmp_path: Path, mounts: Mounts) -> None:
    """The source lies on an ext4 file system (a loop device) that is unmounted, changed while
    mounted elsewhere, and mounted again where it was: the mirror is kept meanwhile, the source
    is the same directory again (same device and inode), a full sync sends what changed, and
    the churn after it is seen (under fanotify, by a mark on the file system's new instance: an
    unmount removes the old mark silently)."""
    disk, elsewhere, destination = tmp_path / "disk", tmp_path / "elsewhere", tmp_path / "destination"
    for directory in (disk, elsewhere, destination):
        directory.mkdir()
    device = mounts.ext4_device(tmp_path / "disk.img")
    mounts.mount(device, target=disk)
    source, outside = disk / "tree", disk / "outside"  # on one file system: moves in and out work
    source.mkdir()
    outside.mkdir()
    workload = Workload(source, 3107, "mixed", outside)
    workload.run(80)
    with start(tmp_path, source, destination) as daemon:
        workload.run(80)
        daemon.assert_in_sync(source, destination, 60)
        mirrored = snapshot(destination)
        mounts.unmount(disk)
        daemon.wait_state("source-lost")
        mounts.mount(device, target=elsewhere)
        write_file(elsewhere / "tree" / "written-while-away", "away\n")
        with os.scandir(elsewhere / "tree") as entries:
            shutil.rmtree(min(entry.path for entry in entries if entry.is_dir(follow_symlinks=False)))
        mounts.unmount(elsewhere)
        assert snapshot(destination) == mirrored, f"the mirror changed while the source was away\n{daemon.describe()}"
        mounts.mount(device, target=disk)
        daemon.wait_log(f"the source {source} is back")
        daemon.assert_in_sync(source, destination, 60)
        assert (destination / "written-while-away").exists()
        workload.run(150)
        assert_settles(daemon, workload, source, destination)


@needs_root
@pytest.mark.parametrize("watch_backend", [backends.FANOTIFY], indirect=True)
@pytest.mark.parametrize("layout", ["directory", "bind-mount"])
def test_an_event_storm_outside_the_source_costs_no_rsync_run(
        tmp_path: Path, trees: tuple[Path, Path], mounts: Mounts, layout: str, watch_backend: str) -> None:
    """The mark reports the whole file system: thousands of creations, writes, renames and
    deletions beside the source (in a directory whose name begins with the source's, too, and
    of directories named like the source and those above it) are dropped without a change or an
    rsync run; the one change made in the source after them costs one run. With the source a
    bind mount of a subdirectory, the directories beside it are ones its mount does not reach
    (the kernel names each of them "/")."""
    source, destination = trees
    if layout == "bind-mount":
        original = tmp_path / "disk" / "tree"
        original.mkdir(parents=True)
        mounts.mount("--bind", str(original), target=source)
    write_file(source / "present", "present\n")
    beside = [tmp_path / "outside", tmp_path / f"{source.name}-sibling"]
    with start(tmp_path, source, destination) as daemon:
        daemon.wait_synced()
        runs, sequence = rsync_runs(daemon), daemon.status()["change_seq"]
        for index in range(1500):
            place = beside[index % 2] / f"d{index % 17}"
            write_file(place / f"f{index}", f"{index}\n")
            os.rename(place / f"f{index}", place / f"g{index}")
            if index % 3 == 0:
                os.unlink(place / f"g{index}")
            if index % 250 == 249:
                os.rename(beside[0], tmp_path / "renamed")
                os.rename(tmp_path / "renamed", beside[0])
                for name in source.parts[1:]:  # named like the source and the directories above it
                    (place / name).mkdir()
                    os.rename(place / name, place / f"{name}.old")
                    os.rename(place / f"{name}.old", place / name)
                    (place / name).rmdir()
        shutil.rmtree(beside[1])
        write_file(source / "after-the-storm", "one change\n")
        daemon.wait_synced()
        assert (destination / "after-the-storm").exists()
        assert rsync_runs(daemon) - runs == 1, f"{rsync_runs(daemon) - runs} runs for one change\n{daemon.describe()}"
        changes = daemon.status()["change_seq"] - sequence
        assert changes <= 3, f"{changes} changes counted for one file written\n{daemon.describe()}"
        assert "queue overflowed" not in daemon.log() and "source root" not in daemon.log(), daemon.describe()
        daemon.assert_settled(source / "settled", destination / "settled")


@needs_root
@pytest.mark.parametrize("watch_backend", [backends.FANOTIFY], indirect=True)
def test_a_directory_filled_beyond_a_bind_mounted_source_then_moved_into_it(
        tmp_path: Path, trees: tuple[Path, Path], mounts: Mounts, watch_backend: str) -> None:
    """The source is a bind mount of ``disk/tree``; a release is unpacked in ``disk/staging``
    (which the source's mount does not reach) and moved into ``disk/tree`` through the file
    system's own mount: it arrives whole, and what is written in it afterwards is seen too."""
    source, destination = trees
    tree, staging = tmp_path / "disk" / "tree", tmp_path / "disk" / "staging"
    tree.mkdir(parents=True)
    mounts.mount("--bind", str(tree), target=source)
    write_file(source / "present", "present\n")
    with start(tmp_path, source, destination) as daemon:
        for index in range(20):
            write_file(staging / "release" / f"dir{index % 4}" / f"f{index}", f"{index}\n")
        daemon.wait_synced()  # the staging's events are read (and dropped) before the move
        os.rename(staging / "release", tree / "release")
        daemon.wait_mirrored(source, destination, 30)
        for index in range(4):
            write_file(tree / "release" / f"dir{index}" / "written-after-the-move", f"{index}\n")
        write_file(tree / "release" / "top-after-the-move", "top\n")
        daemon.assert_in_sync(source, destination, 30)
        daemon.assert_settled(source / "settled", destination / "settled")


@needs_root
@pytest.mark.parametrize("watch_backend", [backends.FANOTIFY], indirect=True)
def test_the_source_is_found_back_while_mounts_come_and_go_elsewhere(
        tmp_path: Path, trees: tuple[Path, Path], mounts: Mounts, watch_backend: str) -> None:
    """The source ``mnt/source``, a bind mount of ``disk/source``, is unmounted; it comes back
    as the same directory through another mount (``disk`` bound at ``mnt``) while a tmpfs
    elsewhere is mounted and unmounted again and again (a machine where containers come and
    go): the next re-checks find it back, not put off for as long as the mount table changes."""
    _, destination = trees
    disk, mnt, elsewhere = tmp_path / "disk", tmp_path / "mnt", tmp_path / "elsewhere"
    source = mnt / "source"
    for directory in (disk / "source", source, elsewhere):
        directory.mkdir(parents=True)
    write_file(disk / "source" / "kept", "kept\n")
    mounts.mount("--bind", str(disk / "source"), target=source)
    with start(tmp_path, source, destination) as daemon:
        daemon.wait_synced()
        mounts.unmount(source)
        daemon.wait_state("source-lost")
        write_file(disk / "source" / "written-while-away", "away\n")
        mounts.mount("--bind", str(disk), target=mnt)

        def found_back() -> bool:
            mounts.mount("-t", "tmpfs", "tmpfs", target=elsewhere)  # a mount elsewhere comes and goes
            mounts.unmount(elsewhere)
            return f"the source {source} is back" in daemon.log()

        wait_for(found_back, 20, lambda: f"not found back while mounts came and went\n{daemon.describe()}", poll=0.5)
        daemon.assert_in_sync(source, destination, 30)
        daemon.assert_settled(source / "settled", destination / "settled")
