"""Counters the domain keeps for the metrics: plain numbers fed by events (a run ended, a
full sync started, a hook exited), read through ``snapshot()``. Pure: no I/O.

    >>> tally = RunTally()
    >>> tally.count_run("batch", "changes", "ok", 0.25, {"bytes_sent": 120, "files_transferred": 2})
    >>> tally.count_full_sync("initial")
    >>> tally.snapshot()["runs"]
    [['batch', 'changes', 'ok', 1]]
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Why a full sync ran: the reasons a replica is asked for one, and "threshold" when too many
# paths were pending (also while paused).
FULL_SYNC_REASONS = ("initial", "overflow", "periodic", "watch-lost", "reload", "source-back", "threshold",
                     "failing-cleared", "vanished", "failing-root")


@dataclasses.dataclass
class RunTally:
    """One destination's rsync runs and full syncs, since the daemon started."""

    runs: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)  # (kind, mode, result)
    seconds: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)  # (kind, mode)
    bytes_sent: int = 0
    files_transferred: int = 0
    files_deleted: int = 0
    full_syncs: dict[str, int] = dataclasses.field(default_factory=dict)

    def count_run(self, kind: str, mode: str, result: str, seconds: float, figures: dict[str, int]) -> None:
        self.runs[kind, mode, result] = self.runs.get((kind, mode, result), 0) + 1
        self.seconds[kind, mode] = self.seconds.get((kind, mode), 0.0) + seconds
        self.bytes_sent += figures.get("bytes_sent", 0)
        self.files_transferred += figures.get("files_transferred", 0)
        self.files_deleted += figures.get("files_deleted", 0)

    def count_full_sync(self, reason: str) -> None:
        self.full_syncs[reason] = self.full_syncs.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON values (lists, not tuples as keys) for the status file and the metrics."""
        return {
            "runs": [[*key, count] for key, count in sorted(self.runs.items())],
            "rsync_seconds": [[*key, round(total, 6)] for key, total in sorted(self.seconds.items())],
            "bytes_sent": self.bytes_sent, "files_transferred": self.files_transferred,
            "files_deleted": self.files_deleted, "full_syncs": dict(sorted(self.full_syncs.items())),
        }
