"""Other names of hard-linked files: a write through one name changes all of them, but
inotify reports only the name written to.

The index holds only files with more than one link, so it stays small; it is built by
one walk of the source the first time a batch meets a multi-link file it does not know.
"""

from __future__ import annotations

import os
import stat


class HardLinkIndex:
    def __init__(self, source: str) -> None:
        self.source = source
        self.names: dict[tuple[int, int], set[str]] | None = None

    def _rebuild(self) -> None:
        names: dict[tuple[int, int], set[str]] = {}
        stack = [""]
        while stack:
            relative = stack.pop()
            try:
                with os.scandir(os.path.join(self.source, relative) if relative else self.source) as entries:
                    for entry in entries:
                        path = f"{relative}/{entry.name}" if relative else entry.name
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(path)
                        elif entry.is_file(follow_symlinks=False):
                            status = entry.stat(follow_symlinks=False)
                            if status.st_nlink > 1:
                                names.setdefault((status.st_dev, status.st_ino), set()).add(path)
            except OSError:
                continue
        self.names = names

    def other_names(self, paths: list[str]) -> list[str]:
        """Names not in ``paths`` that share an inode with a multi-link file in ``paths``."""
        multi: list[tuple[str, tuple[int, int]]] = []
        for path in paths:
            try:
                status = os.lstat(os.path.join(self.source, path))
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode) and status.st_nlink > 1:
                multi.append((path, (status.st_dev, status.st_ino)))
        if not multi:
            return []
        if self.names is None or any(key not in self.names for _, key in multi):
            self._rebuild()
        assert self.names is not None
        listed = set(paths)
        found: list[str] = []
        for path, key in multi:
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
