"""Logging: the journal (with structured fields) under systemd, plain lines on stderr otherwise."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("pirsyncd")


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to the journal (JOURNAL_STREAM matches it)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        status = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return status.st_dev == int(device) and status.st_ino == int(inode)


def setup(instance: str, debug: bool) -> None:
    """Route pirsyncd's log to the journal when run by systemd, else to stderr."""
    handler: logging.Handler
    if stderr_is_journal():
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
        else:
            handler = JournalHandler(SYSLOG_IDENTIFIER="pirsyncd", PIRSYNCD_INSTANCE=instance or "-")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pirsyncd: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
