"""sd_notify through systemd-python: readiness, status, watchdog.

A no-op outside systemd (no ``NOTIFY_SOCKET``), where systemd-python (and the libsystemd it
loads, about 0.8 MiB) is not even imported. Asked to notify and unable to — systemd-python
missing, or the socket refusing a datagram — it fails loudly with :class:`NotifyError`, as
python-systemd's own ``notify()`` does: under ``Type=notify`` a silent failure would be a start
timeout minutes later with nothing in the journal.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

_daemon: ModuleType | None = None
_broken = False  # a send failed: NotifyError was raised once, later sends are no-ops


class NotifyError(Exception):
    """Asked to notify systemd (``NOTIFY_SOCKET`` is set) and unable to; the message names the fix."""


def requested() -> bool:
    """Whether systemd asked for notifications: ``NOTIFY_SOCKET`` is set and not empty."""
    return bool(os.environ.get("NOTIFY_SOCKET"))


def check() -> None:
    """Raise NotifyError when asked to notify and systemd-python cannot be imported; call it at
    start, before anything runs, so the error comes first and alone."""
    if requested():
        _systemd_daemon()


def _systemd_daemon() -> ModuleType:
    global _daemon
    if _daemon is None:
        try:
            _daemon = importlib.import_module("systemd.daemon")
        except ImportError as error:
            raise NotifyError(f"NOTIFY_SOCKET is set but systemd-python cannot be imported ({error}), so systemd "
                              "would never hear that pirsyncd is ready: install python3-systemd "
                              "(apt install python3-systemd)") from None
    return _daemon


def send(*assignments: str) -> None:
    """Send e.g. send("READY=1", "STATUS=in sync") when run by systemd; NotifyError when that fails."""
    global _broken
    if not requested() or _broken:
        return
    daemon = _systemd_daemon()
    socket_path = os.environ.get("NOTIFY_SOCKET", "")
    try:
        sent = daemon.notify("\n".join(assignments))
    except OSError as error:
        problem = error.strerror or str(error)
    else:
        if sent:
            return
        problem = "systemd-python did not send it"
    _broken = True  # the shutdown after this error publishes a last status: not a second error
    raise NotifyError(f"cannot notify systemd through NOTIFY_SOCKET={socket_path}: {problem}; run pirsyncd "
                      "as a systemd service, or unset NOTIFY_SOCKET when running it by hand")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6
