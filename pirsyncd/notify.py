"""sd_notify through systemd-python: readiness, status, watchdog. No-ops outside systemd,
where systemd-python (and the libsystemd it loads, about 0.8 MiB) is not even imported."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

_daemon: ModuleType | None = None
_looked = False


def _systemd_daemon() -> ModuleType | None:
    global _daemon, _looked
    if not _looked:
        _looked = True
        try:
            _daemon = importlib.import_module("systemd.daemon")
        except ImportError:  # systemd-python is a dependency of the package; tolerate its absence by hand
            _daemon = None
    return _daemon


def enabled() -> bool:
    return bool(os.environ.get("NOTIFY_SOCKET")) and _systemd_daemon() is not None


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
