"""What to tell a person when fs.inotify.max_user_watches is exhausted: how many directories
are not watched, and the sysctl that fixes it."""

from __future__ import annotations

import os
import time


def limit_message(source: str, unwatched: set[str], resync_interval: float) -> tuple[str, str]:
    """The log line (the sysctl and the value to set) and a short status warning, for the
    directories ``unwatched`` (relative to ``source``)."""
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as stream:
            current = int(stream.read())
    except (OSError, ValueError):
        current = 0
    count, complete = count_directories(source, unwatched)
    needed = current + count + 1024
    counted = f"{count}" if complete else f"at least {count}"
    more = "" if complete else " or more (the count was cut short)"
    message = (f"inotify watch limit reached: fs.inotify.max_user_watches = {current}, {counted} "
               f"directories are not watched; raise it with: sysctl -w fs.inotify.max_user_watches={needed}{more} "
               f"(and in /etc/sysctl.d/ to keep it), or set watch_backend = fanotify, which needs no watch per "
               f"directory. Until then those directories are mirrored by a full sync every {resync_interval:g} s")
    return message, f"{counted} directories unwatched (raise fs.inotify.max_user_watches)"


def count_directories(source: str, roots: set[str], budget: float = 0.2) -> tuple[int, bool]:
    """How many directories lie at and below the given relative roots, and whether that
    is all of them: the count stops after ``budget`` seconds, so the loop never waits long."""
    total = 0
    deadline = time.monotonic() + budget
    for root in roots:
        stack = [os.path.join(source, root) if root else source]
        while stack:
            if total % 256 == 0 and time.monotonic() > deadline:
                return total, False
            path = stack.pop()
            total += 1
            try:
                with os.scandir(path) as entries:
                    stack.extend(entry.path for entry in entries if entry.is_dir(follow_symlinks=False))
            except OSError:
                continue
    return total, True
