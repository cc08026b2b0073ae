"""When the daemon may act, as a pure state machine (clock injected): running, source lost,
stopping; its timers join the replicas' in the loop's one table
(:mod:`pirsyncd.replica.policy`).

    >>> policy = InstancePolicy(stop_timeout=30, full_resync_interval=3600)
    >>> policy.started(now=0.0)
    >>> policy.state, policy.next_full_sync_at
    (<InstanceState.RUNNING: 'running'>, 3600.0)
"""

from __future__ import annotations

import dataclasses
import enum

from pirsyncd.replica.policy import ReplicaPolicy, ReplicaState, Timer

SOURCE_RECHECK_INTERVAL = 5.0
UNWATCHED_RESYNC_INTERVAL = 60.0


class InstanceState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    SOURCE_LOST = "source-lost"  # the source is gone or is another directory: nothing is sent
    STOPPING = "stopping"  # sending what is pending, then exit
    STOPPED = "stopped"


@dataclasses.dataclass
class InstancePolicy:
    """The daemon's own state: running, source lost, stopping; its timers.

    :attr:`state` is derived from the facts that decide (started, the lost source's reason,
    the stop deadline, the exit status), so it can never disagree with them. Stopping and a
    lost source are two facts: while stopping, a lost source still keeps everything unsent
    (``source_lost``), and the state says STOPPING.
    """

    stop_timeout: float
    full_resync_interval: float = 0.0
    watchdog_interval: float | None = None
    running: bool = False
    lost_reason: str = ""
    source_check_at: float | None = None
    stop_deadline: float | None = None
    next_full_sync_at: float | None = None
    next_watchdog_at: float | None = None
    exit_status: int | None = None

    @property
    def state(self) -> InstanceState:
        if self.exit_status is not None:
            return InstanceState.STOPPED
        if self.stop_deadline is not None:
            return InstanceState.STOPPING
        if self.lost_reason:
            return InstanceState.SOURCE_LOST
        return InstanceState.RUNNING if self.running else InstanceState.STARTING

    def started(self, now: float, unwatched: bool = False) -> None:
        self.running = True
        self.schedule_full_resync(now, unwatched)
        if self.watchdog_interval:
            self.next_watchdog_at = now

    def schedule_full_resync(self, now: float, unwatched: bool = False) -> None:
        interval = self.full_resync_interval
        if unwatched:
            interval = min(interval or UNWATCHED_RESYNC_INTERVAL, UNWATCHED_RESYNC_INTERVAL)
        self.next_full_sync_at = now + interval if interval else None

    def lose_source(self, reason: str, now: float) -> bool:
        """Stop sending; return True when this is news (not lost already)."""
        news = not self.lost_reason
        self.lost_reason = reason
        self.source_check_at = now + SOURCE_RECHECK_INTERVAL
        return news

    def source_still_lost(self, now: float) -> None:
        self.source_check_at = now + SOURCE_RECHECK_INTERVAL

    def source_back(self) -> None:
        self.lost_reason, self.source_check_at = "", None

    @property
    def source_lost(self) -> bool:
        return bool(self.lost_reason)

    @property
    def stopping(self) -> bool:
        return self.stop_deadline is not None

    def begin_stop(self, now: float) -> bool:
        """Start stopping; return False when already stopping (a second signal: stop now)."""
        if self.stop_deadline is not None:
            return False
        self.stop_deadline = now + self.stop_timeout
        return True

    def finish(self, exit_status: int) -> None:
        if self.exit_status is None:
            self.exit_status = exit_status

    def may_exit(self, replicas: list[tuple[ReplicaPolicy, bool]]) -> bool:
        """While stopping: exit once no job runs and nothing is left that could be sent now
        (``replicas`` pairs each policy with whether it has pending changes)."""
        if not self.stopping:
            return False
        for policy, has_pending in replicas:
            if policy.busy:
                return False
            if has_pending and not self.source_lost and policy.state not in (
                    ReplicaState.RETRYING, ReplicaState.HELD, ReplicaState.FAILED):
                return False
        return True

    def watchdog_pinged(self, now: float) -> None:
        if self.watchdog_interval:
            self.next_watchdog_at = now + self.watchdog_interval

    def deadlines(self) -> dict[Timer, float]:
        table: dict[Timer, float] = {}
        for timer, moment in ((Timer.FULL_RESYNC, self.next_full_sync_at), (Timer.SOURCE_CHECK, self.source_check_at),
                              (Timer.STOP, self.stop_deadline), (Timer.WATCHDOG, self.next_watchdog_at)):
            if moment is not None:
                table[timer] = moment
        return table
