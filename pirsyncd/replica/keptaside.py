"""Files being written (created or modified, not closed yet), kept aside from the pending
changes until they are closed, for at most a hold limit: sending one earlier sends a partial
file that its close sends again (pure).

    >>> kept = KeptAside()
    >>> kept.keep("logs/a", 1.0, 7); kept.keep("logs/b", 2.0, 8); kept.keep("c", 3.0, 9)
    >>> kept.oldest(), kept.drop("logs", is_dir=True), list(kept)
    ((1.0, 7), ['logs/a', 'logs/b'], ['c'])
    >>> kept.take_expired(now=12.5, hold_limit=10.0), kept.take_expired(now=12.5, hold_limit=None)
    ([], ['c'])
"""

from __future__ import annotations

from collections.abc import Iterator


class KeptAside:
    """Path -> (when its writing was first seen, the change sequence that brought it),
    oldest first (both only grow)."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[float, int]] = {}

    def __bool__(self) -> bool:
        return bool(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def keep(self, path: str, now: float, seq: int) -> None:
        """Keep ``path`` aside from ``now`` (the first event of its writing, seq ``seq``)."""
        self._files.setdefault(path, (now, seq))

    def oldest(self) -> tuple[float, int] | None:
        """(since, seq) of the file kept aside longest, or None."""
        return next(iter(self._files.values()), None)

    def drop(self, path: str, is_dir: bool) -> list[str]:
        """Stop keeping what is kept aside at ``path`` (and below it, for a directory); return it."""
        if not is_dir:
            return [path] if self._files.pop(path, None) is not None else []
        prefix = path + "/"
        held = [each for each in self._files if each == path or each.startswith(prefix)]
        for each in held:
            del self._files[each]
        return held

    def take_expired(self, now: float, hold_limit: float | None) -> list[str]:
        """Stop keeping the files kept for ``hold_limit`` by ``now`` (None: all of them); return
        them, oldest first."""
        taken = []
        for path, (since, _seq) in self._files.items():
            if hold_limit is not None and since + hold_limit > now:
                break
            taken.append(path)
        for path in taken:
            del self._files[path]
        return taken
