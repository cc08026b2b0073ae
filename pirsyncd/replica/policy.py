"""When a replica may act, as a pure state machine (clock injected), and the kinds of
deadline in the loop's one table.

Every state is one enum value; transitions are methods; the deadlines are one table
(:meth:`ReplicaPolicy.deadlines`, with the instance's: :mod:`pirsyncd.policy`) that the loop
reads both to learn what is due and how long it may sleep.

    >>> policy = ReplicaPolicy(retry_max_interval=300)
    >>> policy.job_started(now=0.0, full=True)
    >>> policy.job_failed(Outcome.RETRY, now=1.0)
    2.0
    >>> policy.state, policy.may_start(1.5), policy.may_start(2.0)
    (<ReplicaState.RETRYING: 'retrying'>, False, True)
"""

from __future__ import annotations

import dataclasses
import enum

from pirsyncd.replica.rsync import Outcome

KILL_GRACE = 10.0  # seconds a stopped child gets between SIGTERM and SIGKILL


class Timer(enum.Enum):
    """The kinds of deadline in the loop's one table. Each acts in ``on_timer`` (the instance's
    or a replica's), except BATCH, a wake-up only: after every turn of the loop the instance
    starts the jobs that are due (``Instance.start_jobs``), so the deadline needs only to end
    the loop's wait."""

    BATCH = "batch"  # wake-up: pending changes are due (their delay passed, or a retry's backoff)
    FAILING = "failing"  # a failing path's own retry
    TIME_LIMIT = "time-limit"  # a batch ran longer than time_limit: stop it
    KILL = "kill"  # a stopped child ignored SIGTERM: kill it
    FULL_RESYNC = "full-resync"  # the periodic full sync (also covers unwatched directories)
    SOURCE_CHECK = "source-check"  # the lost source is looked at again
    STOP = "stop"  # stop_timeout passed while stopping
    WATCHDOG = "watchdog"  # WATCHDOG=1 is due
    PUBLISH = "publish"  # a throttled status update is due
    HOOK = "hook"  # a hook ran past hook_timeout: stop it, then kill it
    STATE = "state"  # everything is in sync: write the restart state (watermark)
    WALK = "walk"  # a tree walk has more to watch: its next bounded step, in the next turn
    AUDIT = "audit"  # a destination's periodic audit is due (it starts once that destination is idle)


class ReplicaState(enum.Enum):
    INITIAL_SYNC = "initial-sync"  # the first full sync has not succeeded yet
    IN_SYNC = "in-sync"  # nothing running; pending changes wait for their delay
    SYNCING = "syncing"  # a job is running
    RETRYING = "retrying"  # the last job failed: the next waits for the backoff
    HELD = "held"  # max_delete stopped deletions: nothing is sent until a reload
    FAILED = "failed"  # the destination refused us in a way retrying cannot fix


@dataclasses.dataclass
class ReplicaPolicy:
    """One destination's state: retry with capped backoff, held, failed, the running job."""

    retry_max_interval: float
    time_limit: float = 3600.0
    state: ReplicaState = ReplicaState.INITIAL_SYNC
    failures: int = 0
    retry_at: float | None = None
    reason: str = ""  # why it retries, is held or failed
    job_started_at: float | None = None
    job_is_full: bool = False
    stopped_at: float | None = None  # when the running job was asked to stop
    in_sync_once: bool = False

    @property
    def busy(self) -> bool:
        return self.job_started_at is not None

    def may_start(self, now: float) -> bool:
        """True when a job may start now (if there is anything to send)."""
        if self.busy or self.state in (ReplicaState.HELD, ReplicaState.FAILED):
            return False
        return self.retry_at is None or now >= self.retry_at

    def job_started(self, now: float, full: bool) -> None:
        self.job_started_at, self.job_is_full, self.stopped_at = now, full, None
        if self.state == ReplicaState.IN_SYNC:
            self.state = ReplicaState.SYNCING

    def job_succeeded(self) -> None:
        self.job_started_at = self.stopped_at = None
        self.state, self.failures, self.retry_at, self.reason = ReplicaState.IN_SYNC, 0, None, ""
        self.in_sync_once = True

    def job_failed(self, outcome: Outcome, now: float, reason: str = "") -> float | None:
        """Record a failed job; return when the next may start (None: held or failed)."""
        self.job_started_at = self.stopped_at = None
        self.reason = reason
        if outcome == Outcome.DELETE_LIMIT:
            self.state = ReplicaState.HELD
            return None
        if outcome == Outcome.FATAL:
            self.state = ReplicaState.FAILED
            return None
        self.failures += 1
        self.retry_at = now + min(self.retry_max_interval, 2.0 ** (self.failures - 1))
        self.state = ReplicaState.RETRYING
        return self.retry_at

    def job_abandoned(self) -> None:
        """The job ended without a verdict (its batch is kept, e.g. the source was lost)."""
        self.job_started_at = self.stopped_at = None
        if self.state == ReplicaState.SYNCING:
            self.state = ReplicaState.IN_SYNC

    def stop_requested(self, now: float) -> None:
        if self.stopped_at is None:
            self.stopped_at = now

    def release(self) -> None:
        """A reload: held and failed destinations are tried again, at once."""
        if self.state in (ReplicaState.HELD, ReplicaState.FAILED, ReplicaState.RETRYING):
            self.state = ReplicaState.IN_SYNC if self.in_sync_once else ReplicaState.INITIAL_SYNC
        self.failures, self.retry_at, self.reason = 0, None, ""

    def deadlines(self, batch_due: float | None) -> dict[Timer, float]:
        """This replica's deadlines; ``batch_due`` is when its pending changes are due."""
        table: dict[Timer, float] = {}
        if batch_due is not None and self.state not in (ReplicaState.HELD, ReplicaState.FAILED) and not self.busy:
            table[Timer.BATCH] = max(batch_due, self.retry_at or batch_due)
        if self.stopped_at is not None:
            table[Timer.KILL] = self.stopped_at + KILL_GRACE
        elif self.job_started_at is not None and not self.job_is_full:
            table[Timer.TIME_LIMIT] = self.job_started_at + self.time_limit
        return table

    def healthy(self, now: float) -> bool:
        """False when a job outlived its time limit by far: our own kill did not work."""
        return not (self.job_started_at is not None and not self.job_is_full
                    and now - self.job_started_at > 2 * self.time_limit + 30)
