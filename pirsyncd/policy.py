"""When the daemon may act, as a pure state machine (clock injected): its one state, and
its timers, which join the replicas' in the loop's one table (:mod:`pirsyncd.replica.policy`).

The instance's state has two axes, because they are independent: a stop can begin while
the source is lost or the instance is paused, and what happens then depends on both.

    phase:  STARTING ─> RUNNING ─> STOPPING ─> STOPPED
    hold:   why nothing is sent now, the strongest reason first:
            SOURCE_LOST (until it is back) > PAUSED (until resumed) > WALKING (for a moment)

    >>> policy = InstancePolicy(stop_timeout=30, full_resync_interval=3600)
    >>> policy.started(now=0.0)
    >>> policy.state(paused=False, walking=False), policy.next_full_sync_at
    (InstanceState(phase=<Phase.RUNNING: 'running'>, hold=None), 3600.0)
    >>> policy.state(paused=True, walking=True).label
    'paused'
"""

from __future__ import annotations

import dataclasses
import enum

from pirsyncd.replica.policy import ReplicaPolicy, ReplicaState, Timer

SOURCE_RECHECK_INTERVAL = 5.0
UNWATCHED_RESYNC_INTERVAL = 60.0


class Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"  # sending what is pending (what can be sent), then exit
    STOPPED = "stopped"


class Hold(enum.Enum):
    """Why nothing is sent now (changes are still read and kept)."""

    SOURCE_LOST = "source-lost"  # the source is gone or is another directory
    PAUSED = "paused"  # pirsyncd pause: until pirsyncd resume
    WALKING = "walking"  # a tree walk is adding watches: sent once every directory is watched


@dataclasses.dataclass(frozen=True)
class InstanceState:
    """The instance's one state, read by everything that decides: whether jobs may start,
    whether a stop may end, whether the restart state may advance, what readers are told."""

    phase: Phase
    hold: Hold | None = None

    @property
    def may_send(self) -> bool:
        """Jobs may start."""
        return self.phase in (Phase.RUNNING, Phase.STOPPING) and self.hold is None

    @property
    def stopping(self) -> bool:
        return self.phase == Phase.STOPPING

    @property
    def held_for_long(self) -> bool:
        """Nothing will be sent until something outside changes (the source comes back, a
        person resumes): a stop does not wait for it. A walk ends by itself."""
        return self.hold in (Hold.SOURCE_LOST, Hold.PAUSED)

    @property
    def source_settled(self) -> bool:
        """The source is there and every directory of it is watched."""
        return self.hold not in (Hold.SOURCE_LOST, Hold.WALKING)

    @property
    def label(self) -> str | None:
        """What readers see as the instance's state when it overrides the destinations'
        (None: the destinations' own states tell); a walk is not news."""
        if self.phase in (Phase.STOPPING, Phase.STOPPED):
            return self.phase.value
        if self.hold in (Hold.SOURCE_LOST, Hold.PAUSED):
            return self.hold.value
        return None


@dataclasses.dataclass
class InstancePolicy:
    """The facts the instance's state is made of, and its timers.

    The state (:meth:`state`) is derived from them and from the two facts that live where
    they are kept (the pause file, the source's walk), so it can never disagree with them.
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

    def state(self, paused: bool, walking: bool) -> InstanceState:
        """The one state, from the policy's facts and ``paused`` (the pause file) and
        ``walking`` (a tree walk is adding watches)."""
        if self.exit_status is not None:
            phase = Phase.STOPPED
        elif self.stop_deadline is not None:
            phase = Phase.STOPPING
        else:
            phase = Phase.RUNNING if self.running else Phase.STARTING
        hold = Hold.SOURCE_LOST if self.lost_reason else Hold.PAUSED if paused else Hold.WALKING if walking else None
        return InstanceState(phase, hold)

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

    def begin_stop(self, now: float) -> bool:
        """Start stopping; return False when already stopping (a second signal: stop now)."""
        if self.stop_deadline is not None:
            return False
        self.stop_deadline = now + self.stop_timeout
        return True

    def finish(self, exit_status: int) -> None:
        if self.exit_status is None:
            self.exit_status = exit_status

    def may_exit(self, state: InstanceState, replicas: list[tuple[ReplicaPolicy, bool]]) -> bool:
        """While stopping: exit once no job runs and nothing is left that could be sent now
        (``replicas`` pairs each policy with whether it has pending changes)."""
        if not state.stopping:
            return False
        for policy, has_pending in replicas:
            if policy.busy:
                return False
            if has_pending and not state.held_for_long and policy.state not in (
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
