"""Pause and resume: an instance is paused while its pause file exists.

``pirsyncd pause NAME`` creates the file and sends SIGUSR2; ``pirsyncd resume NAME`` removes it
and sends SIGUSR2 again. The daemon looks at the file at start, on SIGUSR2 and on a reload, so a
pause survives both a reload and a restart, and whoever may write the file's directory may pause.

While paused nothing is sent, but events are still read and coalesced into the pending set
(past full_sync_threshold it becomes one full sync), so nothing is lost and the inotify queue
never overflows. The file's content is informational (who paused, when).

    $STATE_DIRECTORY/NAME.paused     under systemd (StateDirectory=pirsyncd: /var/lib/pirsyncd)
    STATUS_FILE minus .json + .paused  by hand, next to the status file
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("pirsyncd")
STATE_DIRECTORY = "/var/lib/pirsyncd"  # what systemd's StateDirectory=pirsyncd becomes


def default_pause_path(instance: str, status_file: str | None, state_directory: str | None = None) -> str | None:
    """Where the pause file of an instance lives when pause_file does not say.

    >>> default_pause_path("www", "/run/pirsyncd/www.json", "/var/lib/pirsyncd")
    '/var/lib/pirsyncd/www.paused'
    >>> default_pause_path("", "/tmp/t/status.json", None)
    '/tmp/t/status.paused'
    """
    if state_directory is None:
        state_directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or None
    if instance and state_directory:
        return os.path.join(state_directory, f"{instance}.paused")
    if status_file:
        return status_file.removesuffix(".json") + ".paused"
    return None


class PauseSwitch:
    """Whether the instance is paused: the pause file, looked at when asked (``refresh``)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.paused = False
        self.since: float | None = None  # epoch: when it was paused (the file's mtime)

    def refresh(self, path: str | None = None) -> bool:
        """Look at the pause file again (at another path after a reload); True when that changed
        whether the instance is paused."""
        if path is not None:
            self.path = path
        try:
            since: float | None = os.stat(self.path).st_mtime if self.path else None
        except FileNotFoundError:
            since = None
        except OSError as error:
            # Unreadable: keep what was decided last, and say why.
            log.warning("cannot look at the pause file %s: %s; staying %s", self.path, error.strerror,
                        "paused" if self.paused else "running")
            return False
        was = self.paused
        self.paused, self.since = since is not None, since
        return was != self.paused


def write_pause_file(path: str, who: str) -> None:
    """Create the pause file (atomically, so the daemon never sees a half-written one)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(f"paused by {who} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    os.replace(temporary, path)
