"""Exit statuses, from sysexits.h where one fits, so scripts and systemd units can tell
them apart. ``STATUSES`` is the one table: ``--help``, the man page and the tests read it.

>>> describe(77)
'the destination refused authentication: wrong password, wrong key, or an unknown host key'
"""

from __future__ import annotations

import dataclasses

OK = 0
UNHEALTHY = 1  # pirsyncd status with no NAME, as a monitoring check: something needs a look; audit: drift
REFUSED_WIPE = 65  # EX_DATAERR
NO_SOURCE = 66  # EX_NOINPUT
UNAVAILABLE = 69  # EX_UNAVAILABLE
SOFTWARE = 70  # EX_SOFTWARE
OS_ERROR = 71  # EX_OSERR
NOTIFY = 72  # EX_OSFILE: a system file missing or broken (systemd-python, the notify socket)
CANNOT_CREATE = 73  # EX_CANTCREAT
TEMPFAIL = 75  # EX_TEMPFAIL
NO_PERMISSION = 77  # EX_NOPERM
CONFIG = 78  # EX_CONFIG
# Not in sysexits.h (which ends at 78): watch_backend = fanotify, and fanotify cannot watch the source here.
NO_FANOTIFY = 79
# The source came back on a file system its fanotify mark does not cover, and the worker gave up
# the privilege to place one (pirsyncd.source.capabilities): a restart places it (not in the
# unit's RestartPreventExitStatus=).
NEW_MARK = 80
USAGE = CONFIG  # the command line is configuration too, so systemd does not restart-loop on it


@dataclasses.dataclass(frozen=True)
class ExitStatus:
    code: int
    meaning: str


STATUSES: tuple[ExitStatus, ...] = (
    ExitStatus(OK, "success; or stopped by SIGTERM or SIGINT after sending what was pending"),
    ExitStatus(UNHEALTHY, "a destination is retrying, held or failed, or a source is lost (status with no NAME); "
                          "the mirror differs from the source (audit)"),
    ExitStatus(REFUSED_WIPE, "refused to wipe the destination: the source is empty and the destination is not "
                             "(see allow_empty_source); or plan: a full sync would delete more than max_delete, "
                             "or a destination looks wrong"),
    ExitStatus(NO_SOURCE, "the source is missing or not a directory"),
    ExitStatus(UNAVAILABLE, "the instance is not running (status, wait), or a configured one is not (status with "
                            "no NAME), or a destination could not be audited (audit)"),
    ExitStatus(SOFTWARE, "internal error (a bug in pirsyncd; the traceback is in the log: please report it)"),
    ExitStatus(OS_ERROR, "the kernel's inotify is not available (for example the inotify instance limit is reached)"),
    ExitStatus(NOTIFY, "systemd asked for notifications (NOTIFY_SOCKET) and they cannot be sent: systemd-python "
                       "is not installed (install python3-systemd) or the socket refuses them"),
    ExitStatus(CANNOT_CREATE, "the pause file cannot be created or removed (pause, resume)"),
    ExitStatus(TEMPFAIL, "the wait command timed out, or the daemon did not confirm a pause or resume in time, "
                         "or plan could not reach a destination, or the daemon did not settle for an audit in time"),
    ExitStatus(NO_PERMISSION, "the destination refused authentication: wrong password, wrong key, or an unknown "
                              "host key"),
    ExitStatus(CONFIG, "the configuration or the command line is not valid; every problem is listed"),
    ExitStatus(NO_FANOTIFY, "fanotify was asked for (watch_backend = fanotify) and cannot watch the source here "
                            "(the one line logged says why: capabilities, kernel or file system); "
                            "watch_backend = auto falls back to inotify instead"),
    ExitStatus(NEW_MARK, "the source came back on a file system its fanotify mark does not cover (mounted again), "
                         "and the worker gave up CAP_SYS_ADMIN after placing its mark; started again (systemd's "
                         "Restart=on-failure), it places a new one"),
)


def describe(code: int) -> str:
    for status in STATUSES:
        if status.code == code:
            return status.meaning
    return "unknown"


def help_text() -> str:
    """One line for --help: 'Exit statuses: 0 success ..., 65 ...'."""
    return "Exit statuses: " + "; ".join(f"{status.code} {status.meaning.split(':')[0].split(';')[0]}"
                                         for status in STATUSES) + "."
