"""Source paths rsync could not send (unreadable, I/O errors), each retried on its own
backoff so the rest of the mirror keeps its latency (pure, clock injected).

    >>> failing = FailingPaths(retry_max_interval=300)
    >>> failing.record({"sub/secret": "Permission denied"}, now=100.0)
    >>> failing.deadline(), failing.summary()
    (101.0, '1 path failing: sub/secret (Permission denied)')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

SHOWN = 3  # paths named in a summary line


@dataclasses.dataclass
class FailingPath:
    reason: str
    attempts: int
    retry_at: float


class FailingPaths:
    """Source paths rsync could not read (permission denied, I/O errors), each retried on its
    own with a doubling backoff while the other changes go on."""

    def __init__(self, retry_max_interval: float) -> None:
        self.retry_max_interval = retry_max_interval
        self.paths: dict[str, FailingPath] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def record(self, failed: Mapping[str, str], now: float) -> None:
        """Paths that failed in a run: back off 1 s, 2 s, 4 s ... up to retry_max_interval."""
        for path, reason in failed.items():
            known = self.paths.get(path)
            attempts = known.attempts + 1 if known else 1
            wait = min(self.retry_max_interval, 2.0 ** (attempts - 1))
            self.paths[path] = FailingPath(reason, attempts, now + wait)

    def clear(self, sent: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
        """Forget failing paths at or below paths a run sent, except ``keep`` (those that
        failed again); return the paths forgotten."""
        if not self.paths:
            return []
        roots = set(sent)
        kept = set(keep)
        cleared = []
        for path in [path for path in self.paths if path not in kept]:
            components = path.split("/")
            if "." in roots or any("/".join(components[:depth]) in roots for depth in range(1, len(components) + 1)):
                del self.paths[path]
                cleared.append(path)
        return cleared

    def deadline(self) -> float | None:
        """The earliest retry still to hand out, or None."""
        waiting = [entry.retry_at for entry in self.paths.values() if entry.retry_at != float("inf")]
        return min(waiting) if waiting else None

    def take_due(self, now: float) -> list[str]:
        """Paths whose retry is due; they stay failing until a run sends them."""
        due = [path for path, entry in self.paths.items() if entry.retry_at <= now]
        for path in due:
            self.paths[path].retry_at = float("inf")  # handed out: the next record() sets it again
        return due

    def summary(self) -> str:
        """'2 paths failing: sub/secret (Permission denied), other (Input/output error)'."""
        if not self.paths:
            return ""
        count = len(self.paths)
        named = ", ".join(f"{path} ({entry.reason})" for path, entry in sorted(self.paths.items())[:SHOWN])
        more = f" and {count - SHOWN} more" if count > SHOWN else ""
        return f"{count} path{'s' if count != 1 else ''} failing: {named}{more}"

    def snapshot(self, wall_offset: float) -> list[dict[str, object]]:
        """For the status file; ``wall_offset`` turns the monotonic clock into epoch seconds."""
        return [{"path": path, "reason": entry.reason, "attempts": entry.attempts,
                 "next_retry": None if entry.retry_at == float("inf") else entry.retry_at + wall_offset}
                for path, entry in sorted(self.paths.items())[:100]]
