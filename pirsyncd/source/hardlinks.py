"""Other names of hard-linked files: a write through one name changes all of them, but
inotify reports only the name written to.

The index holds only files with more than one link, so it stays small. It is filled
from a scan of the source by ``find`` (a child the loop services like any rsync run,
so a walk of a large tree never blocks the loop), the first time a batch meets a
multi-link file it does not know.

    >>> index = HardLinkIndex("/srv")
    >>> index.load(b"5 7 a\\x005 7 b\\x00")
    >>> sorted(index.names[(5, 7)])
    ['a', 'b']
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

MAX_WANTED = 64  # inodes looked for by number in one scan (beyond: only multi-link files)

Key = tuple[int, int]  # (st_dev, st_ino)


def build_scan_command(source: str, wanted: Iterable[Key] = ()) -> list[str]:
    """argv of the scan: every multi-link file, and the ``wanted`` inodes whatever their
    link count (a name written through may have been replaced since), NUL-separated.

    >>> build_scan_command("/srv/www", [(5, 7)])
    ['find', '/srv/www', '-type', 'f', '(', '-links', '+1', '-o', '-inum', '7', ')', '-printf', '%D %i %P\\\\0']
    """
    inodes = sorted({inode for _, inode in wanted})[:MAX_WANTED]
    clauses = ["-links", "+1"]
    for inode in inodes:
        clauses += ["-o", "-inum", str(inode)]
    return ["find", source, "-type", "f", "(", *clauses, ")", "-printf", "%D %i %P\\0"]


class HardLinkIndex:
    """The source's files with more than one name, by inode, loaded from a scan (``find
    -links +1``) when a changed file has several names: its other names changed too."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.names: dict[Key, set[str]] | None = None

    def load(self, scan_output: bytes) -> None:
        """Take the output of :func:`build_scan_command`."""
        names: dict[Key, set[str]] = {}
        for record in scan_output.split(b"\0"):
            device, _, rest = record.partition(b" ")
            inode, _, path = rest.partition(b" ")
            if device.isdigit() and inode.isdigit() and path:
                names.setdefault((int(device), int(inode)), set()).add(os.fsdecode(path))
        self.names = names

    def examine(self, paths: list[str], inodes: set[Key]) -> tuple[list[tuple[str, Key, int]], bool]:
        """The multi-link files among ``paths`` and ``inodes`` (path, key, link count), and
        whether the index must be scanned first to know their other names."""
        multi: list[tuple[str, Key, int]] = []
        for key in inodes:
            for name in (self.names or {}).get(key, ()):
                multi.append((name, key, 0))
        for path in paths:
            try:
                status = os.lstat(os.path.join(self.source, path))
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode) and status.st_nlink > 1:
                multi.append((path, (status.st_dev, status.st_ino), status.st_nlink))
        keys = {key for _, key, _ in multi} | set(inodes)
        scan = bool(keys) and (self.names is None or any(key not in self.names for key in keys))
        return multi, scan

    def incomplete(self, multi: list[tuple[str, Key, int]]) -> bool:
        """True when the index knows fewer names than a file has links (names moved since)."""
        names = self.names or {}
        return any(len(names.get(key, ())) < links for _, key, links in multi)

    def other_names(self, paths: list[str], multi: list[tuple[str, Key, int]],
                    inodes: Iterable[Key] = ()) -> list[str]:
        """Names not in ``paths`` that still share an inode with a file in ``multi``."""
        if self.names is None:
            return []
        multi = multi + [(name, key, 0) for key in inodes for name in self.names.get(key, ())]
        listed = set(paths)
        found: list[str] = []
        for path, key, _ in multi:
            known = self.names.setdefault(key, set())
            known.add(path)
            for other in list(known):
                if other in listed:
                    continue
                try:
                    status = os.lstat(os.path.join(self.source, other))
                except OSError:
                    known.discard(other)
                    continue
                if (status.st_dev, status.st_ino) != key:
                    known.discard(other)
                    continue
                listed.add(other)
                found.append(other)
        return found
