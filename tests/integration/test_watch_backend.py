"""watch_backend against the real daemon: auto takes fanotify where the probe allows it, and
falls back to inotify with the reason in the log, the status file, ``pirsyncd status`` and
the metrics (a source on overlayfs, a file system mounted below the source, no CAP_SYS_ADMIN);
fanotify asked for and impossible is one line and exit status 79; a restart state written under
one backend starts the other warm. Needs root (mounts, filesystem marks)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pirsyncd.config import exitcodes
from tests.support import backends
from tests.support.daemon import REPO, Daemon, pirsyncd_command, run_pirsyncd
from tests.support.mounts import Mounts
from tests.support.trees import wait_for, wait_until_equal, write_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, CAP_SYS_ADMIN)")

FALLBACK_LOGGED = "watch_backend = auto: watching with inotify, since "
# setpriv drops a capability for good: what the default systemd unit gives the daemon lacks it too.
WITHOUT_SYS_ADMIN = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"]


def overlay_source(tmp_path: Path, mounts: Mounts) -> Path:
    """An overlayfs with default options (no file handles for fanotify), with a file in it."""
    for name in ("lower", "upper", "work", "merged"):
        (tmp_path / name).mkdir()
    write_file(tmp_path / "lower" / "from-below", "lower\n")
    options = f"lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,workdir={tmp_path}/work"
    try:
        mounts.mount("-t", "overlay", "overlay", "-o", options, target=tmp_path / "merged")
    except subprocess.CalledProcessError as error:
        pytest.skip(f"cannot mount an overlayfs here: {error}")
    return tmp_path / "merged"


def tmpfs_source(tmp_path: Path, mounts: Mounts) -> Path:
    """A source on a tmpfs of its own, where filesystem marks work (or the test skips)."""
    source = tmp_path / "source"
    source.mkdir()
    mounts.mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", target=source)
    refusal = backends.fanotify_refusal(source)
    if refusal is not None:
        pytest.skip(f"fanotify filesystem marks are not possible here: {refusal}")
    return source


def metrics_line(backend: str, reason: str = "") -> str:
    return f'pirsyncd_watch_backend{{backend="{backend}",instance="-",reason="{reason}"}} 1.0'


def assert_fell_back(daemon: Daemon, reason_part: str, metrics: Path) -> None:
    """inotify watches, and the reason (containing ``reason_part``) is in the log (one line), the
    status file, ``pirsyncd status`` and the metrics."""
    status = daemon.status()
    assert status["watch_backend"] == "inotify" and reason_part in (status["watch_backend_reason"] or ""), status
    assert status["watched_dirs"] >= 1 and "dirs watched" in status["status_line"], status
    logged = [line for line in daemon.log().splitlines() if FALLBACK_LOGGED in line]
    assert len(logged) == 1 and logged[0].endswith(status["watch_backend_reason"]), daemon.log()
    shown = run_pirsyncd("status", "--status-file", str(daemon.status_file))
    assert f"watching:     inotify, not fanotify: {status['watch_backend_reason']}" in shown.stdout, shown.stdout
    wait_for(lambda: metrics_line("inotify", status["watch_backend_reason"]) in metrics.read_text(), 10,
             lambda: f"no watch backend in the metrics:\n{metrics.read_text()}")


def start_auto(tmp_path: Path, source: Path, destination: Path, prefix: list[str] | None = None) -> Daemon:
    return Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination), "--delay", "0.1",
                  "--watch-backend", "auto", "--metrics-file", str(tmp_path / "metrics.prom"), prefix=prefix)


def test_auto_falls_back_to_inotify_on_overlayfs_and_says_why(tmp_path: Path, mounts: Mounts) -> None:
    source, destination = overlay_source(tmp_path, mounts), tmp_path / "destination"
    destination.mkdir()
    with start_auto(tmp_path, source, destination).start() as daemon:
        assert_fell_back(daemon, "is on overlay", tmp_path / "metrics.prom")
        write_file(source / "new" / "file", "sent\n")
        wait_until_equal(source, destination, 20)
        daemon.assert_watching(source)


def test_auto_prefers_inotify_when_a_file_system_is_mounted_below_the_source(
        tmp_path: Path, mounts: Mounts) -> None:
    """A fanotify mark on the source's file system would not see inside the one mounted below
    it; inotify watches do, so auto takes inotify even where fanotify works."""
    source, destination = tmp_path / "source", tmp_path / "destination"
    for directory in (source / "below", destination):
        directory.mkdir(parents=True)
    mounts.mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", target=source / "below")
    with start_auto(tmp_path, source, destination).start() as daemon:
        assert_fell_back(daemon, "another file system (tmpfs) is mounted below the source at below",
                         tmp_path / "metrics.prom")
        write_file(source / "below" / "inside-the-mount", "seen by its watch\n")
        wait_until_equal(source, destination, 20)


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux) to drop a capability")
def test_auto_without_cap_sys_admin_falls_back_to_inotify(tmp_path: Path, mounts: Mounts) -> None:
    """What the default systemd unit gives the daemon (no CAP_SYS_ADMIN): inotify, saying why."""
    source, destination = tmpfs_source(tmp_path, mounts), tmp_path / "destination"
    destination.mkdir()
    with start_auto(tmp_path, source, destination, prefix=WITHOUT_SYS_ADMIN).start() as daemon:
        assert_fell_back(daemon, "needs CAP_SYS_ADMIN", tmp_path / "metrics.prom")


def test_auto_takes_fanotify_where_it_works(tmp_path: Path, mounts: Mounts) -> None:
    source, destination = tmpfs_source(tmp_path, mounts), tmp_path / "destination"
    destination.mkdir()
    write_file(source / "there-at-start", "start\n")
    with start_auto(tmp_path, source, destination).start() as daemon:
        status = daemon.status()
        assert status["watch_backend"] == "fanotify" and status["watch_backend_reason"] is None, status
        assert status["watched_dirs"] == 0 and "watched by fanotify" in status["status_line"], status
        daemon.wait_log("watch_backend = auto: watching with fanotify")
        daemon.wait_log(f"watching {source} (one fanotify mark)")
        shown = run_pirsyncd("status", "--status-file", str(daemon.status_file)).stdout
        assert "watching:     fanotify" in shown and "watched dirs" not in shown, shown
        metrics = tmp_path / "metrics.prom"
        wait_for(lambda: metrics_line("fanotify") in metrics.read_text(), 10, metrics.read_text)
        write_file(source / "a" / "b" / "c", "nested at once\n")
        (source / "there-at-start").rename(source / "a" / "moved")
        wait_until_equal(source, destination, 20)
        daemon.assert_watching(source)


@pytest.mark.auto_deletion_mode
def test_fanotify_refused_is_one_line_and_its_exit_status(tmp_path: Path, mounts: Mounts) -> None:
    source, destination = overlay_source(tmp_path, mounts), tmp_path / "destination"
    destination.mkdir()
    result = run_pirsyncd("--source", str(source), "--destination", str(destination), "--watch-backend", "fanotify",
                          "--status-file", str(tmp_path / "status.json"))
    assert result.returncode == exitcodes.NO_FANOTIFY == 79, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == (f"pirsyncd: watch_backend = fanotify, but fanotify cannot watch {source}: {source} is on "
                        f"overlay (mounted at {source}), which cannot report file handles to fanotify (overlayfs "
                        "does so only with index=on,nfs_export=on); set watch_backend = auto or inotify, or remove "
                        "the cause"), lines[0]
    assert os.listdir(destination) == [], "nothing is sent when the backend asked for cannot watch"


@pytest.mark.auto_deletion_mode
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux) to drop a capability")
def test_fanotify_without_cap_sys_admin_is_refused(tmp_path: Path, mounts: Mounts) -> None:
    source, destination = tmpfs_source(tmp_path, mounts), tmp_path / "destination"
    destination.mkdir()
    result = subprocess.run([*WITHOUT_SYS_ADMIN, *pirsyncd_command("--source", str(source), "--destination",
                                                              str(destination), "--watch-backend", "fanotify")],
                            capture_output=True, text=True, timeout=60, check=False, cwd=REPO)
    assert result.returncode == 79, result
    assert result.stderr.strip().splitlines() == [
        f"pirsyncd: watch_backend = fanotify, but fanotify cannot watch {source}: a fanotify filesystem mark needs "
        "CAP_SYS_ADMIN; set watch_backend = auto or inotify, or remove the cause"], result.stderr


def test_a_restart_state_starts_either_backend_warm(tmp_path: Path, mounts: Mounts) -> None:
    """The directory index means the same under both backends: the state an inotify run wrote
    starts a fanotify run warm, whose own state (written while it runs and at its stop) starts
    an inotify run warm; a directory renamed while down is found each time."""
    source, destination = tmpfs_source(tmp_path, mounts), tmp_path / "destination"
    destination.mkdir()
    state = tmp_path / "www.state"
    write_file(source / "a" / "sub" / "file", "one\n")
    write_file(source / "top", "top\n")

    def daemon(backend: str, name: str) -> Daemon:
        return Daemon(tmp_path / name, "--source", str(source), "--destination", str(destination), "--delay", "0.1",
                      "--state-file", str(state), "--watch-backend", backend)

    with daemon("inotify", "first").start() as first:
        first.wait_synced()
        wait_for(state.exists, 30, "the inotify run wrote no state")
    os.rename(source / "a", source / "b")
    with daemon("fanotify", "second").start() as second:
        second.wait_log("warm start:")
        assert second.status()["start"]["kind"] == "warm", second.describe()
        second.wait_synced()
        wait_until_equal(source, destination, 30)
        written = os.stat(state).st_mtime_ns
        write_file(source / "b" / "sub" / "live", "live\n")
        second.wait_synced()
        wait_for(lambda: os.stat(state).st_mtime_ns != written, 30,
                 lambda: f"the fanotify run wrote no state while running\n{second.describe()}")
    assert "full sync" not in second.log(), second.log()
    os.rename(source / "b", source / "c")
    with daemon("inotify", "third").start() as third:
        third.wait_log("warm start:")
        assert third.status()["start"]["kind"] == "warm", third.describe()
        third.wait_synced()
        wait_until_equal(source, destination, 30)
    assert "full sync" not in third.log(), third.log()


def test_debug_events_under_fanotify_log_only_what_changes_the_source(tmp_path: Path, mounts: Mounts) -> None:
    """The log on the marked file system itself: logging each event read (its own writes to
    the log among them) would make events without end; only those below the source are logged."""
    shared = tmpfs_source(tmp_path, mounts)  # one tmpfs holds the source, the log and the status
    source, destination = shared / "source", tmp_path / "destination"
    for directory in (source, destination):
        directory.mkdir()
    with Daemon(shared / "daemon", "--source", str(source), "--destination", str(destination), "--delay", "0.1",
                "--watch-backend", "fanotify", "--debug-events").start() as daemon:
        write_file(source / "logged", "x\n")
        daemon.wait_synced()
        daemon.wait_log("entry='logged'")
        logged = daemon.log().count("fanotify event")
        daemon.wait_synced()  # a signal, a read of the queue and a status write later
        daemon.wait_synced()
        assert daemon.log().count("fanotify event") == logged, daemon.log()[-3000:]
