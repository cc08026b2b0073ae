"""The watch backend (``watch_backend``) a test's daemons use: inotify, or fanotify as well for
the tests marked ``fanotify_too`` (tests/integration/conftest.py runs those on both).

:class:`tests.support.daemon.Daemon` reads :func:`current` as it reads the deletion path: a
daemon gets ``--watch-backend`` with the current backend unless its arguments name one, so that
the daemon's own default (``auto``, which takes fanotify where a probe allows it) never decides
which backend a test ran on.
Under fanotify the test's ``tmp_path`` is a private tmpfs, so the filesystem mark sees the
test's events only (not the whole machine's), and the test skips with the probe's reason where
this machine cannot place a filesystem mark.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

INOTIFY, FANOTIFY = "inotify", "fanotify"
BACKENDS = (INOTIFY, FANOTIFY)

_current = INOTIFY


def current() -> str:
    """The backend of the running test's daemons."""
    return _current


@contextlib.contextmanager
def using(backend: str) -> Iterator[str]:
    """Make ``backend`` :func:`current` for the duration of the block."""
    global _current
    previous, _current = _current, backend
    try:
        yield backend
    finally:
        _current = previous


def daemon_arguments(arguments: list[str]) -> list[str]:
    """What a daemon with ``arguments`` adds for the current backend: ``--watch-backend`` and
    the backend, unless the arguments name one."""
    if any(argument.split("=", 1)[0] == "--watch-backend" for argument in arguments):
        return []
    return ["--watch-backend", _current]


def fanotify_refusal(path: str | os.PathLike[str]) -> str | None:
    """Why a fanotify filesystem mark cannot watch ``path`` here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "needs root (CAP_SYS_ADMIN for a filesystem mark, and a tmpfs of its own)"
    from pirsyncd.source.fanotify_probe import filesystem_marks_refusal
    return filesystem_marks_refusal(os.fspath(path))
