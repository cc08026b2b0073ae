"""Exit statuses, from sysexits.h where one fits, so scripts and systemd units can tell them apart."""

OK = 0
USAGE = 78  # the command line is configuration too: EX_CONFIG, so systemd does not restart-loop on it
REFUSED_WIPE = 65  # EX_DATAERR: the source is empty and the destination is not
NO_SOURCE = 66  # EX_NOINPUT: the source is missing or not a directory
UNAVAILABLE = 69  # EX_UNAVAILABLE: the daemon is not running (status, wait)
SOFTWARE = 70  # EX_SOFTWARE: a bug in pirsyncd
OS_ERROR = 71  # EX_OSERR: inotify could not be set up
TEMPFAIL = 75  # EX_TEMPFAIL: wait timed out
NO_PERMISSION = 77  # EX_NOPERM: the destination refused our credentials
CONFIG = 78  # EX_CONFIG: the configuration is invalid
