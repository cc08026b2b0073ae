"""Start the real pirsyncd as a subprocess for tests, and always stop it by its PID.

The one way the tests start the daemon (:class:`Daemon`); bench/ builds its command line with
:func:`pirsyncd_command` and reads the status file with :func:`read_status_file` too.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support import backends, rsyncs
from tests.support.notify import NotifySocket
from tests.support.processes import fanotify_marked_devices, inotify_watched_inodes, stop_process
from tests.support.trees import differences, wait_for, wait_until_equal, write_file

_Started = TypeVar("_Started")

REPO = Path(__file__).resolve().parents[2]
# Not inherited from the environment the tests run in: the daemon runs as by hand, not as a
# systemd service (a notify socket is given on purpose, see Daemon), and only a password file
# given on purpose authenticates it to an rsync daemon.
NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID",
                 "RSYNC_PASSWORD")


def pirsyncd_command(*arguments: str, python: str = sys.executable) -> list[str]:
    """The argv that runs pirsyncd from this checkout: ``[python, '-m', 'pirsyncd', *arguments]``.

    >>> pirsyncd_command("--check", "www", python="python3")
    ['python3', '-m', 'pirsyncd', '--check', 'www']
    """
    return [python, "-m", "pirsyncd", *arguments]


def read_status_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The daemon's status file, or {} while it does not exist yet (or is caught being replaced)."""
    try:
        with open(path, encoding="utf-8") as status_file:
            status = json.load(status_file)
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def run_pirsyncd(*arguments: str, timeout: float = 60, env: dict[str, str] | None = None,
                 input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run pirsyncd to completion (for --check, status, wait, errors)."""
    return subprocess.run(pirsyncd_command(*arguments), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False,
                          stdin=subprocess.DEVNULL if input is None else None)


class Daemon:
    """A running ``pirsyncd`` with a status file in ``workdir``.

    Use as a context manager; ``stop()`` sends SIGTERM and waits, then stops it and every process
    it started (by PID) after a deadline. stderr goes to ``workdir/pirsyncd.log`` so a failing test
    can show it.

    On a deletion path (:func:`tests.support.rsyncs.current`, set for every integration test) it
    runs with ``--deletion-mode NAME`` (unless ``arguments`` name one) and that path's rsync first
    in PATH; ``env`` may set PATH, the rsync still goes first.

    The systemd variables of the environment the tests run in are not passed on
    (:data:`NOT_INHERITED`): with ``notify`` (a :class:`tests.support.notify.NotifySocket`) the
    daemon gets ``NOTIFY_SOCKET`` naming that socket, and ``env`` may add ``WATCHDOG_USEC``.

    ``prefix`` goes before the command, e.g. ``['setpriv', '--reuid=65534', '--regid=65534',
    '--clear-groups', '--']`` to run it as nobody, or ``ip netns exec NAME``. It must exec the
    command, not fork it (setpriv, env, chroot and ip netns exec do; sudo and runuser fork), so that
    the PID is the daemon's. The caller makes ``workdir`` writable by that user (the status file is
    replaced atomically inside it; the log is opened here and inherited) and the source readable,
    the destination writable; nothing here changes permissions.

    ``status_file`` puts the status file elsewhere (default ``workdir/status.json``), e.g. as
    ``DIR/NAME.json`` beside other instances' for ``pirsyncd status --status-dir DIR``.
    """

    def __init__(self, workdir: Path, *arguments: str, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None, notify: NotifySocket | None = None,
                 status_file: Path | None = None) -> None:
        self.workdir = workdir
        self.status_file = status_file or workdir / "status.json"
        self.log_file = workdir / "pirsyncd.log"
        self.prefix = list(prefix or [])
        self.arguments = list(arguments)
        self.deletion_path = rsyncs.current()
        self.env = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
        self.env.update(env or {})
        if notify is not None:
            self.env.update(notify.environment())
        if self.deletion_path is not None:
            self.env = self.deletion_path.environment(self.env)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The argv this daemon runs (prefix included)."""
        arguments = [*self.arguments, "--status-file", str(self.status_file)]
        if self.deletion_path is not None and not any(
                argument.split("=", 1)[0] == "--deletion-mode" for argument in self.arguments):
            arguments += self.deletion_path.daemon_arguments()
        arguments += backends.daemon_arguments(self.arguments)
        return [*self.prefix, *pirsyncd_command(*arguments)]

    def start(self, wait_in_sync: bool = True, timeout: float = 60) -> Daemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=REPO, stdout=log,
                                            stderr=log, stdin=subprocess.DEVNULL, env=self.env)
        if wait_in_sync:
            try:
                status = self.wait_state("in-sync", timeout)
                # A test run under fanotify (tests/support/backends.py) must really watch with it.
                asked = backends.daemon_arguments(self.arguments)
                assert not asked or status.get("watch_backend") == asked[-1], (
                    f"started with {asked}, but watching with {status.get('watch_backend')}\n{self.describe()}")
            except BaseException:
                self.stop()  # a failed start must not leave the daemon running
                raise
        return self

    def __enter__(self) -> Daemon:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def status(self) -> dict[str, Any]:
        return read_status_file(self.status_file)

    def describe(self) -> str:
        """Exit status, status file and the end of the log, for assertion messages."""
        returncode = None if self.process is None else self.process.poll()
        return (f"pirsyncd exit status: {returncode}\nstatus: {json.dumps(self.status(), indent=1)}\n"
                f"log:\n{self.log()[-4000:]}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def assert_running(self) -> None:
        assert self.alive(), f"pirsyncd exited unexpectedly\n{self.describe()}"

    def wait_state(self, state: str | tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
        """Wait until the status file (written by this process) shows ``state`` (or one of them);
        fail at once if the daemon exits."""
        states = (state,) if isinstance(state, str) else state

        def reached() -> dict[str, Any] | None:
            if not self.alive():
                raise AssertionError(f"pirsyncd exited with {self.process and self.process.returncode}:\n"
                                     + self.log())
            status = self.status()
            return status if status.get("state") in states and status.get("pid") == self.pid else None

        return wait_for(reached, timeout, lambda: f"state {state!r} not reached: {self.status()}\n{self.log()}")

    def wait_synced(self, timeout: float = 60) -> None:
        """Block until every change made so far is at the destination (``pirsyncd wait``)."""
        result = run_pirsyncd("wait", "--status-file", str(self.status_file), "--timeout", str(timeout),
                              timeout=timeout + 30)
        assert result.returncode == 0, f"pirsyncd wait: {result.returncode} {result.stderr}\n{self.log()}"

    def assert_in_sync(self, source: Path, destination: Path, timeout: float = 120) -> None:
        """``pirsyncd wait``, then the trees are equal at once: a daemon that says "in sync" must be.

        A difference fails with the differences (and whether they were gone 10 s later).
        """
        self.wait_synced(timeout)
        found = differences(source, destination)
        if found:
            try:
                wait_until_equal(source, destination, 10)
                late = "equal 10 s later"
            except AssertionError:
                late = "still different 10 s later"
            raise AssertionError("\n  ".join([f"pirsyncd wait returned 0, but the trees differ ({late}):",
                                               *found[:20]]) + f"\n{self.describe()}")

    def assert_settled(self, marker: Path, mirrored_marker: Path, timeout: float = 60) -> None:
        """Settled after a churn: a change made now (``marker``, a new file in the source) is sent
        (to ``mirrored_marker``) with no retry or I/O error logged on the way, the status says
        in-sync with nothing failing, and the daemon runs.
        """
        logged = len(self.log())
        marker.write_text("settled\n")
        self.wait_synced(timeout)
        assert mirrored_marker.read_text() == "settled\n", f"{marker} not sent\n{self.describe()}"
        after = self.log()[logged:]
        # Nothing fails here, so any retry would be one the daemon caused itself.
        assert not any(word in after for word in ("retry in", "IO error encountered", "Traceback")), after
        status = self.status()
        assert status.get("state") == "in-sync" and not status.get("failing"), self.describe()
        self.assert_running()

    def assert_watching(self, source: Path) -> None:
        """Once settled, every real directory of ``source`` has one inotify watch (by inode)
        and nothing else has one: a directory without its watch would let a later change
        there go unseen while the daemon says in sync. Under fanotify (the status says which
        backend watches): no inotify watch at all, one filesystem mark covers the tree."""
        if self.status().get("watch_backend") == backends.FANOTIFY:
            marked = fanotify_marked_devices(self.pid)
            assert marked == [os.stat(source).st_dev], (
                f"under fanotify one filesystem mark on the source's file system, not {marked}\n{self.describe()}")
            assert inotify_watched_inodes(self.pid) == [] and self.status().get("watched_dirs") == 0, (
                f"under fanotify the daemon holds inotify watches\n{self.describe()}")
            return
        watched = inotify_watched_inodes(self.pid)
        directories = {str(source): os.lstat(source).st_ino}
        for parent, names, _ in os.walk(source):
            for name in names:
                status = os.lstat(os.path.join(parent, name))
                if stat.S_ISDIR(status.st_mode):
                    directories[os.path.join(parent, name)] = status.st_ino
        unwatched = sorted(path for path, inode in directories.items() if inode not in watched)
        extra = len(watched) - len(set(watched) & set(directories.values()))
        assert not unwatched and not extra, (
            f"{len(unwatched)} source directories have no watch ({unwatched[:5]}), {extra} watches are on "
            f"something else or twice\n{self.describe()}")

    def wait_mirrored(self, source: Path, destination: Path, timeout: float = 45) -> None:
        """:func:`tests.support.trees.wait_until_equal`, adding :meth:`describe` to a failure."""
        try:
            wait_until_equal(source, destination, timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.describe()}") from None

    def wait_log(self, text: str, timeout: float = 30) -> None:
        wait_for(lambda: text in self.log(), timeout, lambda: f"{text!r} not logged:\n{self.log()}")

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for the daemon to exit on its own (nothing is sent to it); return its exit status."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pirsyncd still running after {timeout:g} s\n{self.describe()}") from None

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, wait, then stop it and its children by PID after the deadline; return the exit status."""
        if self.process is None:
            return None
        return stop_process(self.process, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _queue_knob() -> Path:
    """The kernel's queue length for new groups of the current backend (tests/support/backends.py)."""
    return Path(f"/proc/sys/fs/{backends.current()}/max_queued_events")


def start_with_a_small_queue(start: Callable[[], _Started], events: int = 64) -> _Started:
    """Call ``start`` (which starts a daemon) while fs.inotify.max_queued_events (under fanotify,
    fs.fanotify.max_queued_events) is ``events``, so that daemon's queue holds that many; the
    setting is put back at once. Skips without root."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to lower {_queue_knob()}")
    knob = _queue_knob()
    original = knob.read_text()
    knob.write_text(f"{events}\n")
    try:
        return start()
    finally:
        knob.write_text(original)


def burst_while_stopped(daemon: Daemon, source: Path) -> None:
    """500 new files in ``source``/d0 ... d6 (watched already) while the daemon is stopped
    (SIGSTOP), so that it cannot read: a queue of 256 events overflows."""
    daemon.signal(signal.SIGSTOP)
    try:
        for index in range(500):
            write_file(source / f"d{index % 7}" / f"f{index}", f"{index}\n")
    finally:
        daemon.signal(signal.SIGCONT)


def overflow_the_queue(daemon: Daemon, source: Path, destination: Path) -> None:
    """Make a daemon started with a small queue overflow it, and wait until it says so and the
    mirror is whole again: seven watched directories, then 500 files while it cannot read
    (the backend's queue: inotify's or fanotify's)."""
    for index in range(7):
        (source / f"d{index}").mkdir()
    wait_until_equal(source, destination, 20)  # watched now, so the burst below makes events
    burst_while_stopped(daemon, source)
    daemon.wait_log(f"{backends.current()} queue overflowed")
    wait_until_equal(source, destination, 30)
