"""Big trees are walked in bounded steps: a tree moved into the source is mirrored exactly and
every directory ends watched; while it is being walked the loop keeps answering (the watchdog is
pinged, the status is published) and sends nothing; after an overflow the full sync waits for
the re-watch."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from pirsyncd.config import exitcodes
from pirsyncd.ops.status import wait_until_synced
from tests.support.daemon import Daemon, burst_while_stopped, start_with_a_small_queue
from tests.support.notify import NotifySocket
from tests.support.trees import differences, wait_for, write_file

# Moving a tree in deletes nothing: once, pirsyncd choosing the deletion path.
pytestmark = pytest.mark.auto_deletion_mode

# A ping every 25 ms: many while some 20,000 directories are walked. The test reads the notify
# socket all along, as systemd does: a full socket would block the daemon's sd_notify().
WATCHDOG_USEC = 50_000


def make_tree(root: Path, top: int, middle: int, bottom: int) -> int:
    """``top`` directories of ``middle`` of ``bottom``, a file in each middle one; return how
    many directories that is, ``root`` included."""
    for first in range(top):
        for second in range(middle):
            for third in range(bottom):
                (root / f"t{first:02d}" / f"m{second:02d}" / f"b{third:02d}").mkdir(parents=True)
            write_file(root / f"t{first:02d}" / f"m{second:02d}" / "file", f"{first}/{second}\n")
    return 1 + top * (1 + middle * (1 + bottom))


def watched_in(status_line: str) -> int | None:
    """The count of ``STATUS=in sync · 20,821 dirs watched · ...``."""
    found = re.search(r"([\d,]+) dirs watched", status_line)
    return int(found.group(1).replace(",", "")) if found else None


def test_a_big_tree_moved_in_is_mirrored_while_the_loop_keeps_answering(
        tmp_path: Path, trees: tuple[Path, Path], notify_socket: NotifySocket) -> None:
    source, destination = trees
    outside = tmp_path / "outside"
    count = make_tree(outside / "big", 20, 40, 25)  # 20,821 directories
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1", env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}, notify=notify_socket)
    with daemon.start():
        before = daemon.status()["watched_dirs"]
        notify_socket.receive()
        start = len(notify_socket.messages)
        (outside / "big").rename(source / "big")
        seen: list[dict[str, Any]] = []

        def walked() -> bool:
            status = daemon.status()
            if status.get("pid") == daemon.pid:
                seen.append(status)
            notify_socket.receive()
            return status.get("watched_dirs") == before + count

        wait_for(walked, 120, lambda: f"the tree moved in was never watched whole\n{daemon.describe()}", poll=0.005)

        def drain(seconds: float) -> None:
            notify_socket.receive(seconds)

        assert wait_until_synced(str(daemon.status_file), 120, poll=drain) == exitcodes.OK, daemon.describe()
        assert differences(source, destination) == [], daemon.describe()
        daemon.assert_watching(source)

        partly = [status for status in seen if before < status["watched_dirs"] < before + count]
        assert partly, f"the status never showed the tree partly watched: the walk held the loop\n{daemon.describe()}"
        # Nothing sent (nor said in sync) until the walk ends: a run could pass a directory
        # before its watch exists and miss what changes there next.
        assert all(status["job"] is None and status["synced_seq"] < status["change_seq"] for status in partly), partly
        notify_socket.receive()
        messages = notify_socket.messages[start:]
        walking = [index for index, message in enumerate(messages)
                   if before < (watched_in(message.get("STATUS") or "") or before) < before + count]
        assert walking, f"no STATUS= with the tree partly watched:\n{notify_socket.transcript(start)}"
        pings = notify_socket.count("WATCHDOG=1", messages[walking[0]:walking[-1] + 1])
        assert pings >= 2, f"the watchdog was not pinged while the tree was walked:\n{notify_socket.transcript(start)}"


def test_after_an_overflow_the_full_sync_waits_for_the_rewatch_done_in_steps(
        tmp_path: Path, trees: tuple[Path, Path], notify_socket: NotifySocket) -> None:
    """Events were lost: every watch is rebuilt, by a walk in steps, and the full sync starts
    once it is complete, so no directory is passed by rsync before its watch exists."""
    source, destination = trees
    count = make_tree(source / "big", 20, 40, 25)
    for index in range(7):
        (source / f"d{index}").mkdir()
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1", env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}, notify=notify_socket)

    def start_and_wait_ready() -> None:  # its inotify instance exists then, with the small queue
        daemon.start(wait_in_sync=False)
        notify_socket.wait_for_message(lambda message: message.has("READY=1"), 120, daemon.describe)

    def drain(seconds: float) -> None:
        notify_socket.receive(seconds)

    try:
        start_with_a_small_queue(start_and_wait_ready)
    except BaseException:
        daemon.stop()
        raise
    with daemon:
        assert wait_until_synced(str(daemon.status_file), 120, poll=drain) == exitcodes.OK, daemon.describe()
        watched = count + 8  # the root and d0 ... d6
        assert daemon.status()["watched_dirs"] == watched
        burst_while_stopped(daemon, source)
        seen: list[dict[str, Any]] = []

        def rewatched() -> bool:
            notify_socket.receive()
            status = daemon.status()
            if status.get("pid") == daemon.pid:
                seen.append(status)
            return "inotify queue overflowed" in daemon.log() and status.get("watched_dirs") == watched and any(
                status["watched_dirs"] < watched for status in seen)

        wait_for(rewatched, 120, lambda: f"no re-watch seen after the overflow\n{daemon.describe()}", poll=0.005)
        partly = [status for status in seen if status["watched_dirs"] < watched]
        assert all(status["job"] is None and status["full_sync_owed"] for status in partly), partly
        assert wait_until_synced(str(daemon.status_file), 120, poll=drain) == exitcodes.OK, daemon.describe()
        assert differences(source, destination) == [], daemon.describe()
        daemon.assert_watching(source)
        assert daemon.status()["counters"]["full_syncs"].get("overflow") == 1, daemon.describe()


def test_a_reload_then_a_stop_while_a_tree_is_walked_send_it_whole_and_exit_cleanly(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """SIGHUP, then SIGTERM, right after a big tree is moved in (its walk pending, as a rule):
    the reload keeps the walk, the stop waits for it, sends the tree and exits 0."""
    source, destination = trees
    outside = tmp_path / "outside"
    make_tree(outside / "big", 20, 40, 25)
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1")
    with daemon:
        reloads = daemon.log().count("reloaded the configuration")
        (outside / "big").rename(source / "big")
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reloaded the configuration", 60)
        assert daemon.log().count("reloaded the configuration") == reloads + 1
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(120) == exitcodes.OK, daemon.describe()
        assert differences(source, destination) == [], daemon.describe()
        assert "changes not sent" not in daemon.log(), daemon.describe()
