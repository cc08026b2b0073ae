"""The daemon's and each replica's policy, driven with plain numbers as the clock."""

from __future__ import annotations

import itertools

from pirsyncd.policy import (
    SOURCE_RECHECK_INTERVAL,
    UNWATCHED_RESYNC_INTERVAL,
    Hold,
    InstancePolicy,
    InstanceState,
    Phase,
)
from pirsyncd.replica.pending import Pending
from pirsyncd.replica.policy import KILL_GRACE, ReplicaPolicy, ReplicaState, Timer
from pirsyncd.replica.rsync import Outcome
from pirsyncd.source.events import Change, ChangeKind


def test_retries_back_off_doubling_up_to_the_cap_and_reset_on_success() -> None:
    policy = ReplicaPolicy(retry_max_interval=5.0)
    waits = []
    now = 0.0
    for _ in range(5):
        policy.job_started(now, full=False)
        retry_at = policy.job_failed(Outcome.RETRY, now, "connection refused")
        assert retry_at is not None
        waits.append(retry_at - now)
        assert not policy.may_start(retry_at - 0.01) and policy.may_start(retry_at)
        now = retry_at
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.state == ReplicaState.RETRYING and policy.reason == "connection refused"
    policy.job_started(now, full=False)
    policy.job_succeeded()
    assert policy.state == ReplicaState.IN_SYNC and policy.failures == 0 and policy.retry_at is None


def test_the_batch_deadline_waits_for_the_backoff() -> None:
    policy = ReplicaPolicy(retry_max_interval=300.0)
    policy.job_started(10.0, full=False)
    policy.job_failed(Outcome.PARTIAL, 10.0)
    assert policy.deadlines(batch_due=10.5) == {Timer.BATCH: 11.0}
    assert policy.deadlines(batch_due=20.0) == {Timer.BATCH: 20.0}
    assert policy.deadlines(batch_due=None) == {}


def sustained_change(delay: float, run_seconds: float, changes_per_second: int = 100, seconds: float = 30.0
                     ) -> tuple[list[float], list[float]]:
    """Drive a Pending and a ReplicaPolicy as the loop does, with one change read every
    1/changes_per_second while each rsync run takes ``run_seconds``; return (how old each
    change was when its batch started, when each batch started)."""
    pending, policy = Pending(delay, full_sync_threshold=10**6), ReplicaPolicy(retry_max_interval=300.0)
    policy.job_succeeded()
    read_at: dict[str, float] = {}
    ages: list[float] = []
    starts: list[float] = []
    run_ends: float | None = None
    step = 1.0 / changes_per_second
    for tick in range(int(seconds * changes_per_second) + int(4 * changes_per_second)):
        now = tick * step
        if run_ends is not None and now >= run_ends:
            policy.job_succeeded()
            run_ends = None
        if now < seconds:
            path = f"d{tick % 50}/f{tick}"
            pending.add(Change(ChangeKind.CLOSED, path), now)
            read_at[path] = now
        due = policy.deadlines(pending.deadline()).get(Timer.BATCH)
        if due is not None and now >= due and policy.may_start(now):
            batch = pending.take(now=now)
            ages += [now - read_at.pop(path) for path in batch.changed]
            starts.append(now)
            policy.job_started(now, full=False)
            run_ends = now + run_seconds
    assert not read_at and not pending, "changes left behind"
    return ages, starts


def test_under_sustained_change_every_change_goes_within_the_delay_plus_the_run_in_flight() -> None:
    for delay, run_seconds in ((1.0, 0.1), (1.0, 1.5), (0.0, 0.05), (0.5, 0.2)):
        ages, starts = sustained_change(delay, run_seconds)
        step = 0.01  # a change is seen at the tick after it is due
        assert max(ages) <= delay + run_seconds + step + 1e-9, (delay, run_seconds, max(ages))
        # Pipelined, never a run per change: runs are at least delay (or a run) apart.
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert min(gaps) >= max(delay, run_seconds) - 1e-9, (delay, run_seconds, min(gaps))
        if run_seconds <= delay:
            assert len(starts) <= 30.0 / delay + 1  # one run per delay: lsyncd's count at the same delay


def test_the_batch_timer_is_off_while_a_job_runs_and_due_at_once_when_it_ends_late() -> None:
    policy = ReplicaPolicy(retry_max_interval=300.0)
    policy.job_succeeded()
    policy.job_started(0.0, full=False)
    assert Timer.BATCH not in policy.deadlines(batch_due=1.0)  # the next batch gathers meanwhile
    policy.job_succeeded()
    assert policy.deadlines(batch_due=1.0)[Timer.BATCH] == 1.0 and policy.may_start(2.5)


def test_max_delete_holds_until_a_reload() -> None:
    policy = ReplicaPolicy(retry_max_interval=300.0)
    policy.job_started(0.0, full=False)
    assert policy.job_failed(Outcome.DELETE_LIMIT, 1.0) is None
    assert policy.state == ReplicaState.HELD
    assert not policy.may_start(10_000.0)
    assert policy.deadlines(batch_due=0.0) == {}  # nothing due: the loop may sleep
    policy.release()
    assert policy.may_start(1.0) and policy.state == ReplicaState.INITIAL_SYNC


def test_a_refusal_fails_the_replica_until_a_reload() -> None:
    policy = ReplicaPolicy(retry_max_interval=300.0)
    policy.job_started(0.0, full=True)
    policy.job_succeeded()
    policy.job_started(1.0, full=False)
    assert policy.job_failed(Outcome.FATAL, 1.0, "auth failed") is None
    assert policy.state == ReplicaState.FAILED and not policy.may_start(100.0)
    policy.release()
    assert policy.state == ReplicaState.IN_SYNC  # it was in sync once


def test_a_running_batch_has_a_time_limit_then_a_kill_grace() -> None:
    policy = ReplicaPolicy(retry_max_interval=300.0, time_limit=60.0)
    policy.job_started(100.0, full=False)
    assert policy.state == ReplicaState.INITIAL_SYNC  # the first full sync has not happened yet
    assert policy.deadlines(batch_due=0.0) == {Timer.TIME_LIMIT: 160.0}
    policy.stop_requested(160.0)
    assert policy.deadlines(batch_due=None) == {Timer.KILL: 160.0 + KILL_GRACE}
    policy.job_abandoned()
    assert policy.deadlines(batch_due=None) == {}


def test_full_syncs_have_no_time_limit() -> None:
    policy = ReplicaPolicy(retry_max_interval=300.0, time_limit=60.0)
    policy.job_started(0.0, full=True)
    assert Timer.TIME_LIMIT not in policy.deadlines(batch_due=None)
    assert policy.healthy(10_000.0)


def test_health_fails_only_when_a_batch_outlives_its_limit_by_far() -> None:
    policy = ReplicaPolicy(retry_max_interval=300.0, time_limit=60.0)
    assert policy.healthy(0.0)
    policy.job_started(0.0, full=False)
    assert policy.healthy(60.0 * 2 + 30)
    assert not policy.healthy(60.0 * 2 + 31)


def test_source_lost_and_back() -> None:
    instance = InstancePolicy(stop_timeout=60.0)
    instance.started(0.0)
    assert instance.lose_source("unmounted", 5.0) is True
    assert instance.lose_source("unmounted", 6.0) is False  # not news: logged once
    assert state(instance) == InstanceState(Phase.RUNNING, Hold.SOURCE_LOST)
    assert state(instance).label == "source-lost" and not state(instance).may_send
    assert instance.deadlines() == {Timer.SOURCE_CHECK: 6.0 + SOURCE_RECHECK_INTERVAL}
    instance.source_still_lost(20.0)
    assert instance.deadlines()[Timer.SOURCE_CHECK] == 20.0 + SOURCE_RECHECK_INTERVAL
    instance.source_back()
    assert state(instance) == InstanceState(Phase.RUNNING) and state(instance).may_send
    assert Timer.SOURCE_CHECK not in instance.deadlines()


def test_stopping_waits_for_work_that_can_still_be_sent() -> None:
    instance = InstancePolicy(stop_timeout=30.0)
    instance.started(0.0)
    replica = ReplicaPolicy(retry_max_interval=300.0)
    replica.job_started(0.0, full=True)
    replica.job_succeeded()
    assert instance.begin_stop(10.0) is True
    assert instance.deadlines()[Timer.STOP] == 40.0
    assert not instance.may_exit(state(instance), [(replica, True)])  # pending and sendable
    assert not instance.may_exit(state(instance, walking=True), [(replica, True)])  # sendable once walked
    replica.job_started(10.0, full=False)
    assert not instance.may_exit(state(instance), [(replica, False)])  # a job runs
    replica.job_succeeded()
    assert instance.may_exit(state(instance), [(replica, False)])
    assert instance.begin_stop(11.0) is False  # a second signal: the caller stops at once


def test_stopping_does_not_wait_for_a_failing_destination_or_a_lost_source() -> None:
    instance = InstancePolicy(stop_timeout=30.0)
    instance.started(0.0)
    failing = ReplicaPolicy(retry_max_interval=300.0)
    failing.job_started(0.0, full=False)
    failing.job_failed(Outcome.RETRY, 0.0)
    instance.begin_stop(1.0)
    assert instance.may_exit(state(instance), [(failing, True)])
    held = ReplicaPolicy(retry_max_interval=300.0)
    held.job_failed(Outcome.DELETE_LIMIT, 0.0)
    assert instance.may_exit(state(instance), [(held, True)])
    sendable = ReplicaPolicy(retry_max_interval=300.0)
    assert not instance.may_exit(state(instance), [(sendable, True)])
    assert instance.may_exit(state(instance, paused=True), [(sendable, True)])  # paused: kept for the next start
    instance.lose_source("gone", 2.0)
    assert state(instance) == InstanceState(Phase.STOPPING, Hold.SOURCE_LOST)
    assert state(instance).label == "stopping"  # stopping is what readers are told
    assert instance.lose_source("still gone", 3.0) is False  # not news while stopping either
    assert instance.may_exit(state(instance), [(sendable, True)])
    instance.finish(0)
    assert state(instance).phase == Phase.STOPPED


def state(policy: InstancePolicy, paused: bool = False, walking: bool = False) -> InstanceState:
    return policy.state(paused=paused, walking=walking)


def test_the_instance_state_follows_its_facts() -> None:
    instance = InstancePolicy(stop_timeout=30.0)
    assert state(instance) == InstanceState(Phase.STARTING) and not state(instance).may_send
    instance.started(0.0)
    assert state(instance, walking=True) == InstanceState(Phase.RUNNING, Hold.WALKING)
    assert state(instance, walking=True).label is None  # a walk is not news to readers
    assert not state(instance, walking=True).source_settled
    assert state(instance, paused=True, walking=True) == InstanceState(Phase.RUNNING, Hold.PAUSED)
    assert state(instance, paused=True).source_settled and not state(instance, paused=True).may_send
    instance.lose_source("unmounted", 1.0)
    assert state(instance, paused=True) == InstanceState(Phase.RUNNING, Hold.SOURCE_LOST)  # the strongest hold
    instance.source_back()
    assert state(instance) == InstanceState(Phase.RUNNING)
    instance.begin_stop(2.0)
    assert state(instance).stopping and state(instance).may_send


def test_the_watchdog_and_periodic_full_syncs_are_in_the_table() -> None:
    instance = InstancePolicy(stop_timeout=30.0, full_resync_interval=3600.0, watchdog_interval=15.0)
    instance.started(100.0)
    assert instance.deadlines() == {Timer.WATCHDOG: 100.0, Timer.FULL_RESYNC: 3700.0}
    instance.watchdog_pinged(100.0)
    assert instance.deadlines()[Timer.WATCHDOG] == 115.0
    instance.schedule_full_resync(200.0, unwatched=True)  # unwatched directories: every minute
    assert instance.deadlines()[Timer.FULL_RESYNC] == 200.0 + UNWATCHED_RESYNC_INTERVAL
    quiet = InstancePolicy(stop_timeout=30.0)
    quiet.started(0.0)
    assert quiet.deadlines() == {}  # idle with nothing to do: the loop sleeps


def test_the_exit_status_is_set_once() -> None:
    instance = InstancePolicy(stop_timeout=30.0)
    instance.finish(77)
    instance.finish(0)
    assert instance.exit_status == 77
