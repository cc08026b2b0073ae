"""Which watcher watches the source (``watch_backend``): inotify, a watch on every directory,
or fanotify, one filesystem mark for the whole tree.

    inotify  ─> the inotify Watcher, as always (nothing is probed)
    fanotify ─> the probe ─> the FanotifyWatcher, or BackendUnavailable (one line, its exit status)
    auto     ─> mounts below the source? ─> the probe ─> the FanotifyWatcher, or the inotify
                Watcher with the reason (the log, the status file, ``pirsyncd status``)

``auto`` prefers inotify when another mirrored file system is mounted below the source: inotify
watches cover it, a filesystem mark on the source's file system does not (its contents would be
covered by full syncs only).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from pirsyncd.config import exitcodes
from pirsyncd.source.fanotify_probe import filesystem_marks_refusal
from pirsyncd.source.identity import SourceProblem
from pirsyncd.source.mounts import MOUNTINFO, Mount, kept_out_reason, mount_of, mounts_below, parse_mountinfo

INOTIFY = "inotify"
FANOTIFY = "fanotify"
AUTO = "auto"


class BackendUnavailable(SourceProblem):
    """``watch_backend = fanotify`` and fanotify cannot watch the source: the message is the one
    line to log (the cause and the fix), the exit status :data:`exitcodes.NO_FANOTIFY`."""

    def __init__(self, source: str, refusal: str) -> None:
        super().__init__(f"watch_backend = fanotify, but fanotify cannot watch {source}: {refusal}; "
                         f"set watch_backend = auto or inotify, or remove the cause", exitcodes.NO_FANOTIFY)


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """The backend in use and, when ``auto`` did not take fanotify, why (one line; else None)."""

    backend: str
    reason: str | None = None


def mounts_beyond_a_mark(source: str, table: list[Mount], one_file_system: bool) -> dict[str, Mount]:
    """The file systems mounted below ``source`` that are mirrored (not pseudo file systems, not
    kept out by ``one_file_system``) and that a filesystem mark on the source's would not reach,
    by path relative to the source.

    >>> table = [Mount(1, "/", "ext4"), Mount(2, "/srv/www/data", "xfs"), Mount(3, "/srv/www/proc", "proc")]
    >>> sorted(mounts_beyond_a_mark("/srv/www", table, False)), mounts_beyond_a_mark("/srv/www", table, True)
    (['data'], {})
    """
    root = mount_of(source, table)
    root_device = root.device if root is not None else None
    return {path: mount for path, mount in mounts_below(source, table).items()
            if mount.device != root_device and kept_out_reason(mount.fstype, one_file_system) is None}


def choose_backend(asked: str, source: str, one_file_system: bool,
                   refusal: Callable[[str], str | None] = filesystem_marks_refusal,
                   table: list[Mount] | None = None) -> BackendChoice:
    """The backend for ``watch_backend = asked``: inotify without a look when asked for;
    fanotify, or BackendUnavailable, when asked for; for ``auto`` fanotify when ``refusal``
    (the probe) finds nothing against it and no mirrored file system is mounted below the
    source, else inotify and the reason. ``table``: the mount table (read when None)."""
    if asked == INOTIFY:
        return BackendChoice(INOTIFY)
    real_source = os.path.realpath(source)
    if asked == AUTO:
        beyond = mounts_beyond_a_mark(real_source, _read_table() if table is None else table, one_file_system)
        if beyond:
            first = sorted(beyond)[0]
            more = f" and {len(beyond) - 1} more" if len(beyond) > 1 else ""
            return BackendChoice(INOTIFY, f"another file system ({beyond[first].fstype}) is mounted below the "
                                          f"source at {first}{more}, which a fanotify mark would not reach")
    why_not = refusal(source)
    if why_not is None:
        return BackendChoice(FANOTIFY)
    if asked == FANOTIFY:
        raise BackendUnavailable(source, why_not)
    return BackendChoice(INOTIFY, why_not)


def _read_table() -> list[Mount]:
    try:
        with open(MOUNTINFO, "rb") as mountinfo:
            return parse_mountinfo(mountinfo.read().decode("latin-1"))
    except OSError:
        return []
