"""A big tree moved into the source is walked in bounded steps: it is mirrored exactly, every
directory ends watched, and while it is being walked the loop keeps answering (the watchdog is
pinged, the status is published) without calling anything in sync."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pirsyncd.config import exitcodes
from pirsyncd.ops.status import wait_until_synced
from tests.support.daemon import Daemon
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
