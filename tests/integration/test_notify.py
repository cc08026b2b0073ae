"""sd_notify as systemd would see it, outside a container: the real daemon talking to a real
``AF_UNIX`` datagram socket (:mod:`tests.support.notify`), with real inotify and rsync.

READY=1 once the watches exist, STATUS= lines that end in sync, WATCHDOG=1 at half of
WATCHDOG_USEC while healthy and none while frozen, STOPPING=1 on SIGTERM, RELOADING=1 then
READY=1 on SIGHUP. tests/system/test_systemd.py checks the same against systemd itself.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pirsyncd.config import exitcodes
from tests.support.daemon import Daemon
from tests.support.fakes import WITHOUT_SYSTEMD_PYTHON
from tests.support.notify import Message, NotifySocket
from tests.support.processes import is_stopped
from tests.support.trees import wait_for, write_file

# The notify protocol does not depend on how rsync deletes: once, pirsyncd choosing.
pytestmark = pytest.mark.auto_deletion_mode

WATCHDOG_USEC = 1_000_000  # WatchdogSec=1s: a ping every 0.5 s
PING_INTERVAL = WATCHDOG_USEC / 2e6
# systemd sets WATCHDOG_PID to the PID it started; the shell execs pirsyncd, so $$ is the daemon's.
WITH_WATCHDOG_PID = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"]


def notifying_daemon(tmp_path: Path, notify_socket: NotifySocket, *arguments: str, watchdog: bool = False,
                     prefix: list[str] | None = None) -> Daemon:
    env = {"WATCHDOG_USEC": str(WATCHDOG_USEC)} if watchdog else {}
    return Daemon(tmp_path / "daemon", *arguments, env=env, prefix=prefix, notify=notify_socket)


def mirroring(source: Path, destination: Path, *extra: str) -> list[str]:
    return ["--source", str(source), "--destination", str(destination), "--delay", "0.1", *extra]


def position(notify_socket: NotifySocket, message: Message) -> int:
    return next(index for index, received in enumerate(notify_socket.messages) if received is message)


def pings_since(notify_socket: NotifySocket, start: int) -> int:
    """WATCHDOG=1 messages from index ``start`` of the messages on, reading what is queued first."""
    notify_socket.receive()
    return notify_socket.count("WATCHDOG=1", notify_socket.messages[start:])


def statuses(messages: list[Message]) -> list[str]:
    return [status for message in messages if (status := message.get("STATUS")) is not None]


def test_ready_is_sent_once_the_watches_exist(tmp_path: Path, trees: tuple[Path, Path],
                                              notify_socket: NotifySocket) -> None:
    """Without an initial sync only inotify can bring a file over: one created in any directory
    right after READY=1 arrives only if that directory was watched before READY=1."""
    source, destination = trees
    directories = [Path(f"top{index % 20:02d}", f"sub{index:03d}") for index in range(600)]
    for directory in directories:
        (source / directory).mkdir(parents=True)
    daemon = notifying_daemon(tmp_path, notify_socket, *mirroring(source, destination, "--no-initial-sync"))
    with daemon.start(wait_in_sync=False):
        ready = notify_socket.wait_for_message(lambda message: message.has("READY=1"), 60, daemon.describe)
        for directory in reversed(directories):
            write_file(source / directory / "after-ready", f"{directory}\n")
        assert ready.pid == daemon.pid

        def missing() -> list[str]:
            return [str(directory) for directory in directories
                    if not (destination / directory / "after-ready").exists()]

        wait_for(lambda: not missing(), 60,
                 lambda: f"created after READY=1 but never mirrored: {missing()[:10]} ({len(missing())} in all)\n"
                         f"{daemon.describe()}")
        for directory in directories:
            assert (destination / directory / "after-ready").read_text() == f"{directory}\n"
        notify_socket.receive()
        assert notify_socket.count("READY=1") == 1, notify_socket.transcript()


def test_status_lines_arrive_and_the_last_says_in_sync(tmp_path: Path, trees: tuple[Path, Path],
                                                       notify_socket: NotifySocket) -> None:
    source, destination = trees
    for index in range(50):
        write_file(source / f"dir{index % 5}" / f"file{index}", f"{index}\n")
    daemon = notifying_daemon(tmp_path, notify_socket, *mirroring(source, destination))
    with daemon.start(wait_in_sync=False):
        notify_socket.wait_for_message(lambda message: (message.get("STATUS") or "").startswith("in sync"), 60,
                                       daemon.describe)
        daemon.wait_synced()  # a barrier: the status file's and STATUS='s in-sync are final
        assert daemon.status()["state"] == "in-sync", daemon.describe()
        notify_socket.receive()
        lines = statuses(notify_socket.messages)
        assert len(lines) >= 2, notify_socket.transcript()
        assert not lines[0].startswith("in sync"), f"in sync before the initial sync:\n{notify_socket.transcript()}"
        assert lines[-1].startswith("in sync"), notify_socket.transcript()
        assert lines[-1] == daemon.status()["status_line"]
        assert {message.pid for message in notify_socket.messages} == {daemon.pid}


def test_watchdog_pings_keep_arriving_while_healthy(tmp_path: Path, trees: tuple[Path, Path],
                                                    notify_socket: NotifySocket) -> None:
    source, destination = trees
    write_file(source / "file")
    daemon = notifying_daemon(tmp_path, notify_socket, *mirroring(source, destination), watchdog=True,
                              prefix=WITH_WATCHDOG_PID)
    with daemon.start(wait_in_sync=False):
        daemon.wait_state("in-sync", 60)
        idle_from = len(notify_socket.messages)
        wait_for(lambda: pings_since(notify_socket, idle_from) >= 6, 30,
                 lambda: f"fewer than 6 WATCHDOG=1 in 30 s at WATCHDOG_USEC={WATCHDOG_USEC}:\n"
                         f"{notify_socket.transcript(idle_from)}\n{daemon.describe()}")
        busy_from = len(notify_socket.messages)
        write_file(source / "while-pinging", "busy\n")
        daemon.wait_mirrored(source, destination)
        wait_for(lambda: pings_since(notify_socket, busy_from) >= 2, 30,
                 lambda: f"the pings stopped after a sync:\n{notify_socket.transcript(busy_from)}")
        pings = [message for message in notify_socket.messages if message.has("WATCHDOG=1")]
        assert {message.pid for message in pings} == {daemon.pid}


def test_a_daemon_frozen_by_sigstop_sends_no_watchdog_pings(tmp_path: Path, trees: tuple[Path, Path],
                                                            notify_socket: NotifySocket) -> None:
    source, destination = trees
    write_file(source / "file")
    daemon = notifying_daemon(tmp_path, notify_socket, *mirroring(source, destination), watchdog=True)
    with daemon.start(wait_in_sync=False):
        daemon.wait_state("in-sync", 60)
        notify_socket.wait_for_message(lambda message: message.has("WATCHDOG=1"), 30, daemon.describe)
        daemon.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: is_stopped(daemon.pid), 10, "pirsyncd never stopped on SIGSTOP")
            notify_socket.receive()  # sent before it stopped
            while_frozen = notify_socket.listen(4 * PING_INTERVAL)
            assert notify_socket.count("WATCHDOG=1", while_frozen) == 0, [str(message) for message in while_frozen]
        finally:
            daemon.signal(signal.SIGCONT)
        resumed_from = len(notify_socket.messages)
        notify_socket.wait_for_message(lambda message: message.has("WATCHDOG=1"), 30, daemon.describe,
                                       after=resumed_from)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(60) == 0, daemon.describe()


def test_sigterm_sends_stopping(tmp_path: Path, trees: tuple[Path, Path], notify_socket: NotifySocket) -> None:
    source, destination = trees
    write_file(source / "file")
    daemon = notifying_daemon(tmp_path, notify_socket, *mirroring(source, destination))
    with daemon.start(wait_in_sync=False):
        notify_socket.wait_for_message(lambda message: message.has("READY=1"), 60, daemon.describe)
        daemon.wait_state("in-sync", 60)
        notify_socket.receive()
        stop_from = len(notify_socket.messages)
        assert notify_socket.count("STOPPING=1") == 0
        daemon.signal(signal.SIGTERM)
        stopping = notify_socket.wait_for_message(lambda message: message.has("STOPPING=1"), 30, daemon.describe,
                                                  after=stop_from)
        assert daemon.wait_exit(60) == 0, daemon.describe()
        notify_socket.receive()
        assert stopping.pid == daemon.pid
        assert notify_socket.count("STOPPING=1") == 1, notify_socket.transcript(stop_from)
        assert notify_socket.count("READY=1", notify_socket.messages[stop_from:]) == 0, (
            notify_socket.transcript(stop_from))


def daemon_with_config_file(tmp_path: Path, source: Path, destination: Path,
                            notify_socket: NotifySocket) -> tuple[Path, Daemon]:
    """A daemon (not started) reading ``www.conf``, which a reload reads again."""
    write_file(source / "file")
    config = tmp_path / "www.conf"
    config.write_text(f"[sync]\nsource = {source}\ndestination = {destination}\ndelay = 0.1\n")
    return config, notifying_daemon(tmp_path, notify_socket, "--config", str(config))


def reload_and_wait_ready(daemon: Daemon, notify_socket: NotifySocket) -> tuple[Message, Message]:
    """SIGHUP; return (the RELOADING=1 message, the READY=1 message after it)."""
    notify_socket.receive()
    reload_from = len(notify_socket.messages)
    daemon.signal(signal.SIGHUP)
    reloading = notify_socket.wait_for_message(lambda message: message.has("RELOADING=1"), 30, daemon.describe,
                                               after=reload_from)
    ready = notify_socket.wait_for_message(lambda message: message.has("READY=1"), 30, daemon.describe,
                                           after=position(notify_socket, reloading))
    assert not reloading.has("READY=1"), f"RELOADING=1 and READY=1 in one message: {reloading}"
    assert reloading.pid == ready.pid == daemon.pid
    return reloading, ready


def test_sighup_sends_reloading_then_ready(tmp_path: Path, trees: tuple[Path, Path],
                                           notify_socket: NotifySocket) -> None:
    source, destination = trees
    config, daemon = daemon_with_config_file(tmp_path, source, destination, notify_socket)
    with daemon.start():
        config.write_text(config.read_text() + "exclude = *.tmp\n")
        reload_and_wait_ready(daemon, notify_socket)
        daemon.wait_log("reloaded the configuration")
        # The READY=1 came after the new configuration took effect.
        write_file(source / "kept.txt", "kept\n")
        write_file(source / "skipped.tmp", "excluded now\n")
        daemon.wait_synced()
        assert (destination / "kept.txt").exists() and not (destination / "skipped.tmp").exists()


def test_sighup_with_a_broken_config_still_sends_ready(tmp_path: Path, trees: tuple[Path, Path],
                                                       notify_socket: NotifySocket) -> None:
    """systemd waits for READY=1 after RELOADING=1 (Type=notify-reload): a bad config must not
    leave the unit reloading."""
    source, destination = trees
    config, daemon = daemon_with_config_file(tmp_path, source, destination, notify_socket)
    with daemon.start():
        config.write_text(config.read_text().replace("delay = 0.1", "delay = ten"))
        _reloading, ready = reload_and_wait_ready(daemon, notify_socket)
        daemon.wait_log("reload failed")
        daemon.assert_running()
        assert (ready.get("STATUS") or "").startswith("in sync"), ready
        write_file(source / "after-the-bad-reload", "still mirrored\n")
        daemon.wait_mirrored(source, destination)


# -- asked to notify and unable to: one error line and its own exit status, never a silent start timeout


def only_line(daemon: Daemon) -> str:
    lines = daemon.log().splitlines()
    assert len(lines) == 1, f"expected one error line:\n{daemon.describe()}"
    return lines[0]


def test_a_notify_socket_without_systemd_python_is_an_error_naming_the_fix(
        tmp_path: Path, trees: tuple[Path, Path], notify_socket: NotifySocket) -> None:
    source, destination = trees
    write_file(source / "file", "content\n")
    daemon = Daemon(tmp_path / "daemon", *mirroring(source, destination), notify=notify_socket,
                    env={"PYTHONPATH": str(WITHOUT_SYSTEMD_PYTHON)})
    with daemon.start(wait_in_sync=False):
        assert daemon.wait_exit() == exitcodes.NOTIFY, daemon.describe()
    line = only_line(daemon)
    assert line.startswith("pirsyncd: NOTIFY_SOCKET is set but systemd-python cannot be imported"), line
    assert "install python3-systemd" in line, line
    assert not (destination / "file").exists(), "nothing may start before the error"
    assert notify_socket.listen(0) == [], notify_socket.transcript()


def test_a_notify_socket_that_refuses_datagrams_is_an_error(tmp_path: Path, trees: tuple[Path, Path],
                                                            notify_socket: NotifySocket) -> None:
    source, destination = trees
    notify_socket.socket.close()  # the path stays, nothing reads it: every datagram is refused
    daemon = Daemon(tmp_path / "daemon", *mirroring(source, destination), notify=notify_socket)
    with daemon.start(wait_in_sync=False):
        assert daemon.wait_exit() == exitcodes.NOTIFY, daemon.describe()
    error = [line for line in daemon.log().splitlines() if "NOTIFY_SOCKET" in line]
    assert len(error) == 1, daemon.describe()
    assert f"cannot notify systemd through NOTIFY_SOCKET={notify_socket.path}" in error[0], error[0]
    assert "unset NOTIFY_SOCKET" in error[0], error[0]


def test_outside_systemd_systemd_python_is_not_even_imported(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    imports = tmp_path / "systemd-imports"
    daemon = Daemon(tmp_path / "daemon", *mirroring(source, destination),
                    env={"PYTHONPATH": str(WITHOUT_SYSTEMD_PYTHON), "PIRSYNCD_TEST_SYSTEMD_IMPORTS": str(imports)})
    with daemon:
        write_file(source / "file", "content\n")
        daemon.wait_mirrored(source, destination)
    assert not imports.exists(), imports.read_text()
