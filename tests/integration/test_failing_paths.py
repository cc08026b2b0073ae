"""Source paths rsync cannot read fail on their own: every other change keeps flowing at the normal
delay, the failing path is named in the status and retried on its own backoff, and once it is
readable it is mirrored without a restart.

The daemon runs as nobody (root reads everything), in a world-accessible directory under /tmp:
pytest's own temporary directories are private to root. Needs root (to become nobody).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, run_pirsyncd
from tests.support.notify import NotifySocket
from tests.support.trees import wait_for, wait_until_equal, write_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs the daemon as nobody)")

NOBODY = pwd.getpwnam("nobody")
AS_NOBODY = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups", "--"]



class Mirror:
    """source (root's, readable by all), destination and workdir (nobody's), the daemon as nobody."""

    def __init__(self, base: Path, notify: NotifySocket) -> None:
        self.source, self.destination, workdir = base / "source", base / "destination", base / "daemon"
        for directory in (self.source, self.destination, workdir):
            directory.mkdir(mode=0o755)
        for directory in (self.destination, workdir):
            os.chown(directory, NOBODY.pw_uid, NOBODY.pw_gid)
        self.daemon = Daemon(workdir, "--source", str(self.source), "--destination", str(self.destination),
                             "--delay", "0.1", "--retry-max-interval", "2", prefix=AS_NOBODY, notify=notify)
        self.notify = notify
        self.states_seen: set[str] = set()

    def state(self) -> str:
        """The daemon's state now, remembered: it must never have been 'retrying'."""
        state = str(self.daemon.status().get("state"))
        self.states_seen.add(state)
        return state

    def wait_mirrored(self, *ignore: str) -> None:
        try:
            wait_until_equal(self.source, self.destination, 30, ignore=ignore)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- daemon log:\n{self.daemon.log()}") from None
        self.state()

    def assert_never_retried(self) -> None:
        """Every entry into 'retrying' logs "sync failed (...); N paths kept, retry in S s"."""
        log = self.daemon.log()
        assert "retrying" not in self.states_seen, f"{self.states_seen}\n{log}"
        assert "retry in" not in log and "sync failed" not in log, log

    def wait_failing(self, summary: str) -> dict[str, object]:
        def named() -> dict[str, object] | None:
            self.state()
            status = self.daemon.status()
            return status if status.get("failing") == summary else None

        return wait_for(named, 30, lambda: f"failing is not {summary!r}: {self.daemon.status()}\n{self.daemon.log()}")

    def wait_cleared(self, path: str) -> None:
        self.daemon.wait_log(f"no longer failing: {path}")
        wait_for(lambda: self.daemon.status().get("failing") is None and self.daemon.status()["failing_paths"] == [],
                 30, lambda: f"failing not cleared: {self.daemon.status()}")

    def wait_log_matching(self, pattern: str) -> None:
        wait_for(lambda: re.search(pattern, self.daemon.log()), 30,
                 lambda: f"no log line matches {pattern!r}:\n{self.daemon.log()}")


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    """A Mirror in a directory under /tmp that nobody can reach, with a notify socket nobody may send
    to; the daemon is stopped (if started), the socket and the directory removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="pirsyncd-failing-", dir="/tmp"))
    try:
        base.chmod(0o755)
        with NotifySocket() as notify:
            notify.directory.chmod(0o755)
            notify.path.chmod(0o777)  # connecting to a socket takes write permission
            mirror = Mirror(base, notify)
            # Read the socket all along, as systemd does: its queue holds 10 datagrams
            # (net.unix.max_dgram_qlen), and a daemon sending an 11th would block in sd_notify.
            stop_reading = threading.Event()
            reader = threading.Thread(target=read_until, args=(notify, stop_reading), daemon=True)
            reader.start()
            try:
                yield mirror
            finally:
                mirror.daemon.stop()
                stop_reading.set()
                reader.join(10)
    finally:
        shutil.rmtree(base)


def read_until(notify: NotifySocket, stop: threading.Event) -> None:
    while not stop.is_set():
        notify.receive(timeout=0.05)


def assert_status_names(mirror: Mirror, path: str, summary: str) -> None:
    status = mirror.wait_failing(summary)
    assert summary in str(status["status_line"]), status
    wait_for(lambda: any(summary in (message.get("STATUS") or "") for message in list(mirror.notify.messages)), 30,
             lambda: f"no STATUS= names {summary!r}:\n{mirror.notify.transcript()[-2000:]}")
    entries = status["failing_paths"]
    assert isinstance(entries, list) and [entry["path"] for entry in entries] == [path], entries
    assert entries[0]["reason"] == "Permission denied" and entries[0]["attempts"] >= 1, entries
    shown = run_pirsyncd("status", "--status-file", str(mirror.daemon.status_file))
    assert shown.returncode == 0 and f"{path}: Permission denied" in shown.stdout, shown
    waited = run_pirsyncd("wait", "--status-file", str(mirror.daemon.status_file), "--timeout", "60", timeout=90)
    assert waited.returncode == 0, waited
    assert f"in sync except {summary}" in waited.stderr, waited


def write_a_few_at_a_time(mirror: Mirror, prefix: str, *ignore: str) -> None:
    """Other changes arrive at the normal pace while a path keeps failing."""
    for round_number in range(4):
        for index in range(3):
            write_file(mirror.source / f"{prefix}{round_number % 2}" / f"file{round_number}-{index}",
                  f"{round_number} {index}\n")
        if round_number == 2:
            (mirror.source / f"{prefix}0" / "file0-0").unlink()
        mirror.wait_mirrored(*ignore)


def test_an_unreadable_file_fails_alone_until_it_is_readable(mirror: Mirror) -> None:
    write_file(mirror.source / "plain", "plain\n")
    write_file(mirror.source / "sub" / "neighbour", "sent\n")
    secret = mirror.source / "sub" / "secret"
    write_file(secret, "secret\n")
    secret.chmod(0)
    # The full sync exits 23 and still counts as done: in sync. (The fixture stops a daemon that is not.)
    with mirror.daemon.start() as daemon:
        daemon.wait_log("full sync sent in")
        mirror.wait_log_matching(r"full sync sent in .*\(rsync status 23\)")
        daemon.wait_log("1 path failing: sub/secret (Permission denied); "
                        "retried with their own backoff while other changes go on")
        mirror.wait_mirrored("sub/secret")
        assert not (mirror.destination / "sub" / "secret").exists()
        write_a_few_at_a_time(mirror, "dir", "sub/secret")
        write_file(mirror.source / "sub" / "next-to-the-secret", "same directory\n")
        mirror.wait_mirrored("sub/secret")
        # Its own retries are batches too, and exit 23 while the file stays unreadable.
        mirror.wait_log_matching(r"changes of \d+ paths sent .*\(rsync status 23\)")
        assert_status_names(mirror, "sub/secret", "1 path failing: sub/secret (Permission denied)")
        mirror.assert_never_retried()
        secret.chmod(0o644)
        mirror.wait_mirrored()
        assert (mirror.destination / "sub" / "secret").read_text() == "secret\n"
        mirror.wait_cleared("sub/secret")
        daemon.wait_synced()
        waited = run_pirsyncd("wait", "--status-file", str(daemon.status_file), "--timeout", "60")
        assert waited.returncode == 0 and "except" not in waited.stderr, waited
        mirror.assert_never_retried()
        assert daemon.status()["pid"] == daemon.pid  # no restart


def test_an_unreadable_directory_fails_alone_until_it_is_readable(mirror: Mirror) -> None:
    write_file(mirror.source / "plain", "plain\n")
    write_file(mirror.source / "elsewhere" / "deleted-meanwhile", "goes while locked is unreadable\n")
    write_file(mirror.source / "elsewhere" / "kept", "kept\n")
    locked = mirror.source / "locked"
    write_file(locked / "inside", "inside\n")
    write_file(locked / "inner" / "deeper", "deeper\n")
    locked.chmod(0)
    # Left over at the destination: the full sync deletes them unless rsync skips its deletions ("IO error
    # encountered -- skipping file deletion"); in a directory rsync reaches after the failing one it does,
    # so a full sync must follow once that one is readable.
    write_file(mirror.source / "zzz-after-locked" / "kept", "kept\n")
    for stale in ("stale/old", "elsewhere/stale-too", "zzz-after-locked/stale"):
        write_file(mirror.destination / stale, "old\n")
    for directory, _, files in os.walk(mirror.destination):
        for path in [directory, *(os.path.join(directory, name) for name in files)]:
            os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    with mirror.daemon.start() as daemon:
        mirror.wait_log_matching(r"full sync sent in .*\(rsync status 23\)")
        daemon.wait_log("1 path failing: locked (Permission denied)")
        write_a_few_at_a_time(mirror, "dir", "locked", "stale", "elsewhere/stale-too", "zzz-after-locked/stale")
        (mirror.source / "elsewhere" / "deleted-meanwhile").unlink()
        mirror.wait_log_matching(r"(changes|deletions) of \d+ paths sent .*\(rsync status 23\)")
        assert_status_names(mirror, "locked", "1 path failing: locked (Permission denied)")
        mirror.assert_never_retried()
        locked.chmod(0o755)
        mirror.wait_mirrored()
        assert not (mirror.destination / "elsewhere" / "deleted-meanwhile").exists()
        assert not (mirror.destination / "stale").exists()
        assert not (mirror.destination / "zzz-after-locked" / "stale").exists()
        mirror.wait_cleared("locked")
        # Readable now, so watched like any directory: a change in it flows at the normal delay.
        write_file(locked / "inner" / "after-the-fix", "after\n")
        mirror.wait_mirrored()
        daemon.wait_synced()
        mirror.assert_never_retried()
        assert daemon.status()["pid"] == daemon.pid
