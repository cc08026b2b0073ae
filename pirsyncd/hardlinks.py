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

    def _rebuild(self, wanted: set[tuple[int, int]] | frozenset[tuple[int, int]] = frozenset()) -> None:
        """Walk the source; record multi-link files, and the ``wanted`` inodes whatever
        their link count (a name written through may have been replaced since)."""
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
                            key = (status.st_dev, status.st_ino)
                            if status.st_nlink > 1 or key in wanted:
                                names.setdefault(key, set()).add(path)
            except OSError:
                continue
        self.names = names

    def other_names(self, paths: list[str], inodes: set[tuple[int, int]] | None = None) -> list[str]:
        """Names not in ``paths`` that share an inode with a multi-link file in ``paths`` or
        with one of ``inodes`` (multi-link files seen changing when their event arrived:
        by now that name may point elsewhere)."""
        multi: list[tuple[str, tuple[int, int], int]] = []
        if inodes:
            if self.names is None or any(key not in self.names for key in inodes):
                self._rebuild(inodes)
            assert self.names is not None
            for key in inodes:
                for name in list(self.names.get(key, ())):
                    multi.append((name, key, 0))
        for path in paths:
            try:
                status = os.lstat(os.path.join(self.source, path))
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode) and status.st_nlink > 1:
                multi.append((path, (status.st_dev, status.st_ino), status.st_nlink))
        if not multi:
            return []
        if self.names is None or any(key not in self.names for _, key, _ in multi):
            self._rebuild(inodes or frozenset())
        found = self._lookup(paths, multi)
        if self._incomplete(multi):
            # Names moved since the index was built (a renamed directory): look again, once.
            self._rebuild(inodes or frozenset())
            found = self._lookup(paths, multi)
        return found

    def _incomplete(self, multi: list[tuple[str, tuple[int, int], int]]) -> bool:
        assert self.names is not None
        return any(len(self.names.get(key, ())) < links for _, key, links in multi)

    def _lookup(self, paths: list[str], multi: list[tuple[str, tuple[int, int], int]]) -> list[str]:
        assert self.names is not None
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
