"""What a replica hands back to the instance when one of its jobs has ended: a value the
instance acts on (run the on_sync hook, watch cleared paths again, stop sending from a lost
source, exit), never fields left on the replica for it to read and reset."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from pirsyncd.replica.batch import Batch
from pirsyncd.replica.itemize import ItemizedChanges
from pirsyncd.source.identity import SourceProblem


class SyncedJob(NamedTuple):
    """A job that succeeded, for the on_sync hook: its batch, and what rsync said it created,
    updated and deleted in its runs (and those of the failed jobs since the last success), when
    on_sync is configured."""

    batch: Batch
    bytes_sent: int
    rsync_status: int
    changed: ItemizedChanges | None = None


@dataclasses.dataclass(frozen=True)
class ReplicaReport:
    """How a replica's job ended, as far as the instance must act on it.

    ``synced``: the job succeeded (the on_sync hook runs). ``cleared``: paths that were
    failing and were sent now (a directory unreadable before may be watched again).
    ``source_problem``: the job found the source unsafe to mirror; nothing was sent and the
    batch is kept. ``exit_status``: the destination refused us for good (the daemon exits
    with it once every replica has failed).
    """

    synced: SyncedJob | None = None
    cleared: tuple[str, ...] = ()
    source_problem: SourceProblem | None = None
    exit_status: int | None = None
