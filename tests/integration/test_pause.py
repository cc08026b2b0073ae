"""Pause and resume: nothing is sent while paused, yet every event is read (no overflow); resume
sends an exact mirror; a pause survives a reload and a restart, and a stop still stops."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.support.daemon import Daemon, run_pirsyncd
from tests.support.trees import differences, snapshot, wait_for, wait_until_equal, write_file


def daemon_for(tmp_path: Path, source: Path, destination: Path, *extra: str) -> Daemon:
    return Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                  "--delay", "0.1", *extra)


def pirsyncd(command: str, daemon: Daemon) -> None:
    result = run_pirsyncd(command, "--status-file", str(daemon.status_file))
    assert result.returncode == 0, f"pirsyncd {command}: {result.returncode} {result.stderr}\n{daemon.log()}"


def runs_logged(daemon: Daemon) -> int:
    return sum(" sent in " in line or " failed after " in line for line in daemon.log().splitlines())


def churn(source: Path, operations: int) -> None:
    """``operations`` changes in 50 directories: 40% files created, 30% rewritten, 20% renamed,
    10% deleted."""
    created = [source / f"dir{index % 50}" / f"file{index}" for index in range(operations * 4 // 10)]
    for index, path in enumerate(created):
        write_file(path, f"first {index}\n")
    for index, path in enumerate(created[: operations * 3 // 10]):
        write_file(path, f"second {index}\n" * (index % 7 + 1))
    renamed = created[: operations * 2 // 10]
    for path in renamed:
        path.rename(path.with_name(path.name + "-renamed"))
    for path in renamed[: operations // 10]:
        path.with_name(path.name + "-renamed").unlink()


def test_paused_nothing_is_sent_while_10000_changes_are_read_and_resume_mirrors(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    write_file(source / "before", "before\n")
    for index in range(50):
        (source / f"dir{index}").mkdir()  # watched and mirrored: each file below is a path of its own
    # 10,000 changes make about 23,000 events: more than the default queue (16,384) holds, so a
    # daemon that stopped reading (SIGSTOP, the old workaround) would lose them.
    with daemon_for(tmp_path, source, destination).start() as daemon:
        wait_until_equal(source, destination, 20)
        pirsyncd("pause", daemon)
        status = daemon.status()
        assert status["paused"] is True and status["state"] == "paused", status
        assert "paused" in status["status_line"]
        runs_before, mirror_before = runs_logged(daemon), snapshot(destination)
        churn(source, 10_000)
        daemon.signal(signal.SIGUSR1)  # a barrier: once answered, every change above has been read
        wait_for(lambda: daemon.status().get("barrier_requests", 0) == 1, 30,
                 lambda: f"the barrier was not answered while paused: {daemon.status()}")
        assert daemon.status()["pending"] >= 1000, json.dumps(daemon.status()) + daemon.log()
        daemon.wait_log("paused (")
        shown = run_pirsyncd("status", "--status-file", str(daemon.status_file))
        assert "paused:" in shown.stdout and "state:        paused" in shown.stdout, shown.stdout
        assert snapshot(destination) == mirror_before, "something was sent while paused"
        assert runs_logged(daemon) == runs_before
        assert "overflowed" not in daemon.log()
        pirsyncd("resume", daemon)
        assert daemon.status()["paused"] is False
        wait_until_equal(source, destination, 60)
        daemon.wait_synced()
        assert "overflowed" not in daemon.log()
        assert "resumed: sending the" in daemon.log()
        assert daemon.status()["counters"]["full_syncs"] == {"initial": 1}, "no full sync was needed"


def test_past_full_sync_threshold_a_pause_ends_in_one_full_sync(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    with daemon_for(tmp_path, source, destination, "--full-sync-threshold", "50").start() as daemon:
        pirsyncd("pause", daemon)
        for index in range(200):
            write_file(source / f"f{index}", f"{index}\n")
        daemon.signal(signal.SIGUSR1)  # a barrier: once answered, every change above has been read
        wait_for(lambda: daemon.status().get("barrier_requests", 0) == 1, 10, "the barrier was not answered")
        assert daemon.status()["full_sync_owed"] is True, "the pending paths did not collapse into a full sync"
        full_syncs_before = daemon.log().count("full sync sent")
        pirsyncd("resume", daemon)
        wait_until_equal(source, destination, 30)
        daemon.wait_synced()
        assert daemon.log().count("full sync sent") == full_syncs_before + 1
        assert daemon.status()["counters"]["full_syncs"] == {"initial": 1, "threshold": 1}


def test_a_pause_survives_a_reload_and_a_restart_and_stop_still_stops(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    config = tmp_path / "www.conf"
    config.write_text(f"[sync]\nsource = {source}\ndestination = {destination}\ndelay = 0.1\n")
    daemon = Daemon(tmp_path / "daemon", "--config", str(config))
    with daemon.start():
        pirsyncd("pause", daemon)
        pause_file = Path(daemon.status()["pause_file"])
        assert pause_file.exists()
        write_file(source / "while-paused", "1\n")
        wait_for(lambda: daemon.status().get("pending", 0) >= 1, 10, "the change was not read")
        assert daemon.stop(timeout=15) == 0, "a paused daemon must still stop"  # at once, not after stop_timeout
    assert not (destination / "while-paused").exists()
    assert json.loads(daemon.status_file.read_text())["state"] == "stopped"
    shown = run_pirsyncd("pause", "--status-file", str(daemon.status_file))  # not running: the file decides
    assert shown.returncode == 0 and "not running" in shown.stderr, shown

    restarted = Daemon(tmp_path / "daemon", "--config", str(config))
    with restarted.start(wait_in_sync=False):
        status = restarted.wait_state("paused")
        assert status["paused"] is True
        write_file(source / "after-restart", "2\n")
        restarted.signal(signal.SIGHUP)
        restarted.wait_log("reloaded the configuration")
        assert restarted.wait_state("paused")["paused"] is True
        assert not (destination / "while-paused").exists() and not (destination / "after-restart").exists()
        pirsyncd("resume", restarted)
        assert not pause_file.exists()
        wait_until_equal(source, destination, 30)
        restarted.wait_state("in-sync")
    assert differences(source, destination) == []
