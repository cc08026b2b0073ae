"""sd_notify through systemd-python: readiness, status, watchdog. No-ops outside systemd."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

_daemon: ModuleType | None
try:
    _daemon = importlib.import_module("systemd.daemon")
except ImportError:  # systemd-python is a dependency of the package; tolerate its absence by hand
    _daemon = None


def enabled() -> bool:
    return _daemon is not None and bool(os.environ.get("NOTIFY_SOCKET"))


def send(*assignments: str) -> None:
    """Send e.g. send("READY=1", "STATUS=in sync") when run by systemd."""
    if enabled():
        assert _daemon is not None
        _daemon.notify("\n".join(assignments))


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6
