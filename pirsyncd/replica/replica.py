"""A replica, one per destination: its pending changes, its running job, its policy
(retry, backoff, held, failed), its failing paths, how it deletes, and what it reports.
A second destination is a second Replica fed the same changes.

    changes ─> Pending ─(due)─> SyncJob (steps, children) ─> verdict ─> ReplicaPolicy
                                                          └─> failing paths, journal line
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from typing import Any

from pirsyncd.config.parse import Config
from pirsyncd.edges.runner import Child, ChildResult, Command, start_child
from pirsyncd.replica.batch import Batch
from pirsyncd.replica.counters import RunTally
from pirsyncd.replica.deletions import DeletionPath, DeletionProbe
from pirsyncd.replica.failing import FailingPaths
from pirsyncd.replica.itemize import ItemizedChanges
from pirsyncd.replica.job import JobResult, RunRecord, SyncJob
from pirsyncd.replica.pending import Pending
from pirsyncd.replica.plan import SourceFacts
from pirsyncd.replica.policy import ReplicaPolicy, ReplicaState, Timer
from pirsyncd.replica.progress import FullSyncProgress
from pirsyncd.replica.readers import RSYNC_RUNS, output_sink
from pirsyncd.replica.results import ReplicaReport, SyncedJob
from pirsyncd.replica.rsync import Outcome, RunMode
from pirsyncd.replica.runlog import RsyncOutputLog, log_run
from pirsyncd.source.events import Change, ChangeKind
from pirsyncd.source.hardlinks import HardLinkIndex, Key

log = logging.getLogger("pirsyncd")

# Entries rsync created, updated or deleted that on_sync is told of, per call (past it the hook is
# told its list is not complete: PIRSYNCD_COMPLETE=0).
CHANGED_PATHS_LIMIT = 100_000

HELD_WARNING = ("deletions held: more than max_delete entries would be deleted; check the source, then raise "
                "max_delete and reload")


class Replica:
    """One destination's pipeline. Its job asks for commands; the replica starts them with
    ``start_child`` (the runner's, or a test's fake) and hands each Child to the instance,
    whose loop services it and brings back the ChildResult."""

    def __init__(self, config: Config, rsync_output: RsyncOutputLog, name: str = "",
                 start: Callable[[Command], Child] = start_child) -> None:
        self.name = name
        self.start_child = start
        self.config = config
        self.rsync_output = rsync_output
        self.pending = Pending(config.delay, config.full_sync_threshold)
        self.failing = FailingPaths(config.retry_max_interval)
        self.policy = ReplicaPolicy(config.retry_max_interval, config.time_limit)
        self.job: SyncJob | None = None
        self.child: Child | None = None  # the running job's child, if any
        self.deletion = DeletionPath(config.deletion_mode)  # how deletions go; the probe, started at start-up
        self.changed_inodes: set[Key] = set()
        self.full_sync_when_failing_clears = False
        self.prefix = ""  # "web1: " in log lines when the instance has several destinations
        # What it reports.
        self.synced_seq = -1
        self.last_full_sync: float | None = None  # wall clock; carried over a warm start
        self.last_success: float | None = None
        self.last_sync: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self.next_retry: float | None = None
        self.retry_since: float | None = None
        self.files_sent_in_job = 0
        # For the metrics and hooks (issue 15): counters, why the next full sync runs, what just synced.
        self.tally = RunTally()
        self.full_sync_reason = ""
        self.bytes_sent_in_job = 0
        self.last_rsync_status = 0
        # How far the running (or last) full sync is; its rsync output is read as it comes.
        self.progress: FullSyncProgress | None = None
        self.full_sync_entries: int | None = None  # what the last full sync listed: the next one's estimate
        # What rsync changed since the last job that succeeded (on_sync only): read from its runs' output.
        self.changed_by_rsync = ItemizedChanges(CHANGED_PATHS_LIMIT)

    def _log(self, level: int, message: str, *arguments: object) -> None:
        fields = {"PIRSYNCD_INSTANCE": self.config.instance or "-"}
        if self.name:
            fields["PIRSYNCD_DESTINATION"] = self.name
        log.log(level, self.prefix + message, *arguments, extra=fields)

    # -- intake ---------------------------------------------------------------------
    def add(self, changes: list[Change], changed_inodes: set[Key], now: float, seq: int = 0) -> None:
        for change in changes:
            self.pending.add(change, now, seq)
        self.changed_inodes |= changed_inodes
        if self.pending.count >= self.config.trigger_paths and not self.pending.full_sync_needed:
            self.pending.make_due(now)

    def request_full_sync(self, now: float, at_once: bool = False, reason: str = "") -> None:
        """Send everything: after the delay (more events are likely to follow), or at once.
        ``reason`` (counters.FULL_SYNC_REASONS) is what the metrics count it as."""
        self.full_sync_reason = self.full_sync_reason or reason
        self.pending.request_full_sync(now)
        if at_once:
            self.pending.make_due(now)

    @property
    def pending_count(self) -> int:
        """Paths waiting to be sent (a full sync still owed counts as one at least)."""
        owed = max(1, len(self.pending.compare_after_full)) if self.pending.full_sync_needed else 0
        running = max(1, self.job.batch.path_count) if self.job else 0
        return self.pending.count + len(self.pending.writing) + owed + running

    @property
    def oldest_unsent_at(self) -> float | None:
        """When the oldest change not yet at the destination was read (pending, or in the running
        job's batch); None when everything is there. The lag is the time since."""
        times = [self.pending.oldest_unsent_at, self.job.batch.first_change_at if self.job else None]
        known = [each for each in times if each is not None]
        return min(known) if known else None

    @property
    def has_pending(self) -> bool:
        return bool(self.pending)

    # -- deadlines and timers ---------------------------------------------------------
    def deadlines(self, stopping: bool, may_send: bool) -> dict[Timer, float]:
        """This replica's part of the loop's table (``may_send``: the source is there)."""
        due = self.pending.deadline() if may_send else None
        if due is not None and stopping and self.policy.retry_at is None:
            due = 0.0  # stopping: send what is pending now
        table = self.policy.deadlines(due)
        failing = self.failing.deadline()
        if failing is not None and may_send and self.policy.state not in (ReplicaState.HELD, ReplicaState.FAILED):
            table[Timer.FAILING] = failing
        return table

    def on_timer(self, timer: Timer, now: float) -> None:
        child = self.child
        if timer == Timer.FAILING:
            for path in self.failing.take_due(now):
                self._retry_failing_path(path, now)
        elif timer == Timer.TIME_LIMIT and child is not None:
            self._log(logging.ERROR, "rsync ran longer than time_limit (%g s): stopping it; the batch is retried",
                      self.config.time_limit)
            self.policy.stop_requested(now)
            child.stop("time limit")
        elif timer == Timer.KILL and child is not None:
            self._log(logging.ERROR, "rsync ignored SIGTERM for a while (%s): killing it", child.stopped_for)
            child.kill()

    def _retry_failing_path(self, path: str, now: float) -> None:
        """Send a failing path again, as what it is now."""
        if path == ".":
            self.request_full_sync(now, reason="failing-root")
            return
        try:
            is_dir = stat.S_ISDIR(os.lstat(os.path.join(self.config.source, path)).st_mode)
        except OSError:
            self.pending.add(Change(ChangeKind.REMOVED, path, True), now)
            return
        self.pending.add(Change(ChangeKind.NEW_DIR, path, True) if is_dir else Change(ChangeKind.CHANGED, path), now)

    # -- jobs -------------------------------------------------------------------------
    def job_due(self, now: float, stopping: bool) -> bool:
        """True when pending changes are due and the policy lets a job start (stopping: at
        once, and files being written go as they are)."""
        if stopping:
            self.pending.release_writing(now)
        if self.job is not None or not self.pending or not self.policy.may_start(now):
            return False
        due = self.pending.deadline()
        return due is not None and (now >= due or stopping)

    def start_due_job(self, now: float, change_seq: int, hard_links: HardLinkIndex | None,
                      control_path: str | None, kept_out: list[str] | None = None) -> Child | ReplicaReport:
        """Start a job (see :meth:`job_due`); return its first child, or how it ended if it is
        over already."""
        batch = self.pending.take(change_seq, now)
        probe = None if batch.full else self.deletion.take_probe()
        if probe is None and not batch.full and self.deletion.uses_missing_args is None:
            probe = DeletionProbe.start(self.config.rsync_binary, self.start_child)  # not started early: waited for
        self.job = SyncJob(self.config, batch, delete_missing_args=self.deletion.uses_missing_args, probe=probe,
                           on_run=self._on_run, on_probed=self._on_probed, control_path=control_path,
                           hard_links=hard_links, changed_inodes=self.changed_inodes, kept_out=kept_out)
        self.changed_inodes = set()
        self.files_sent_in_job = self.bytes_sent_in_job = 0
        if batch.full:
            self.tally.count_full_sync(self.full_sync_reason or "threshold")
            if self.progress is None or not self.progress.active:  # a retry goes on with the same figures
                clock = time.monotonic()
                self.progress = FullSyncProgress(self.full_sync_reason or "threshold", clock, time.time() - clock,
                                                 self.full_sync_entries)
        self.policy.job_started(now, batch.full)
        return self._next(self.job.start(), now)

    def child_exited(self, result: ChildResult, now: float) -> Child | ReplicaReport:
        """The job's child ended: the job's next child, or how the job ended."""
        assert self.job is not None
        return self._next(self.job.child_exited(result), now)

    def stop_job(self, reason: str, now: float) -> None:
        if self.child is not None:
            self.policy.stop_requested(now)
            self.child.stop(reason)

    def stop_job_and_wait(self, reason: str) -> None:
        """At exit: stop the running child, if any, and wait for it a little."""
        self.deletion.close_probe()
        child = self.child
        if child is not None:
            child.stop(reason)
            child.wait(5.0)

    def reach_barrier(self, seq: int, now: float) -> None:
        """A sync barrier: with nothing pending, everything seen is there (files being written go as they are)."""
        self.pending.release_writing(now)
        if not self.has_pending and self.job is None and self.synced_seq >= 0:
            self.synced_seq = seq

    def _next(self, step: Command | Child | JobResult, now: float) -> Child | ReplicaReport:
        """Start what the job asked for, or act on how it ended."""
        if isinstance(step, JobResult):
            self.child = None
            return self._job_ended(step, now)
        self.child = self.start_child(step) if isinstance(step, Command) else step
        if isinstance(step, Command) and step.label in RSYNC_RUNS:
            if step.label == RunMode.FULL.value and self.progress is not None:
                self.progress.new_attempt()
            sink = output_sink(step.label, self.progress,
                               self.changed_by_rsync if self.config.on_sync else None, CHANGED_PATHS_LIMIT)
            if sink is not None:
                self.child.stdout_sink = sink
        return self.child

    def _on_run(self, record: RunRecord) -> None:
        self.files_sent_in_job += record.figures.get("files_transferred", 0)
        self.bytes_sent_in_job += record.figures.get("bytes_sent", 0)
        self.last_rsync_status = record.result.status
        self.tally.count_run("full" if record.mode == RunMode.FULL else "batch", record.mode.value,
                             record.verdict.outcome.value, record.result.seconds, record.figures)
        entry = log_run(record, self.config.instance, self.name, self.prefix)
        if record.verdict.outcome in (Outcome.OK, Outcome.VANISHED):
            self.last_sync = entry
        else:
            self.last_error = entry
        self.rsync_output.write(record.result.stdout.decode(errors="replace"), record.result.stderr_tail)

    def _on_probed(self, works: bool, version: str) -> None:
        self.deletion.uses_missing_args, self.deletion.rsync_version = works, version
        self._report_deletion_path("probed")

    def _job_ended(self, result: JobResult, now: float) -> ReplicaReport:
        """Act on how the job ended (put-backs, failing paths, the policy) and say what the
        instance must act on."""
        job, self.job = self.job, None
        assert job is not None
        self.collect_probe()
        if result.source_problem is not None:
            self.policy.job_abandoned()
            self.pending.put_back(job.batch, now, SourceFacts(self.config.source).kind)
            return ReplicaReport(source_problem=result.source_problem)
        if result.switch_to_fallback:
            self.deletion.uses_missing_args = False
            self._log(logging.WARNING, "this rsync mishandles --delete-missing-args; switching to the fallback")
            self.policy.job_abandoned()
            self.pending.put_back(job.batch, now, SourceFacts(self.config.source).kind)
            return ReplicaReport()
        if result.verdict.outcome == Outcome.OK:
            return self._job_succeeded(job.batch, result, now)
        return ReplicaReport(exit_status=self._job_failed(job.batch, result, now))

    def _job_succeeded(self, batch: Batch, result: JobResult, now: float) -> ReplicaReport:
        if result.vanished and not batch.full:
            # Send the batch's paths again rather than trust the queued events alone. Never a
            # full sync instead: its quick check cannot see a rewrite that kept size and mtime.
            self.pending.put_back(batch, now, SourceFacts(self.config.source).kind)
        if batch.full and batch.changed and self.pending.moves:
            # Files known to have changed are sent byte for byte after the full sync's quick
            # check; those gone by then (a rename) are stale at the destination, which matters
            # only to a pending rename of one (no lstat of the list otherwise).
            facts = SourceFacts(self.config.source)
            self.pending.stale_at_destination([path for path in batch.changed if facts.kind(path) is None], now)
        cleared = self._settle_failing(batch, result, now)
        if not result.vanished:
            self.synced_seq = max(self.synced_seq, batch.change_seq)
        self.policy.job_succeeded()
        if batch.full:
            self.full_sync_reason, self.last_full_sync = "", time.time()
            if self.progress is not None:
                self.progress.finish(time.monotonic())
                self.full_sync_entries = self.progress.listed or None
        self.last_success = time.time()
        self.next_retry = self.retry_since = None
        changed, self.changed_by_rsync = self.changed_by_rsync, ItemizedChanges(CHANGED_PATHS_LIMIT)
        return ReplicaReport(synced=SyncedJob(batch, self.bytes_sent_in_job, self.last_rsync_status,
                                              changed if self.config.on_sync else None),
                             cleared=tuple(cleared))

    def _job_failed(self, batch: Batch, result: JobResult, now: float) -> int | None:
        """Keep the batch and back off, hold or fail; the exit status when the destination
        refused us for good."""
        verdict = result.verdict
        self.pending.put_back(batch, now, SourceFacts(self.config.source).kind)
        retry_at = self.policy.job_failed(verdict.outcome, now, verdict.meaning)
        if verdict.outcome == Outcome.DELETE_LIMIT:
            # Retrying would delete max_delete more each time: hold until a person decides.
            self._log(logging.ERROR, "sync held: %s; nothing more is sent until the configuration is reloaded "
                      "(systemctl reload, or SIGHUP); %d paths kept", verdict.fix, self.pending_count)
        elif verdict.outcome == Outcome.FATAL:
            if self.prefix:
                self._log(logging.ERROR, "taken out: %s; %s, then reload (the other destinations go on)",
                          verdict.meaning, verdict.fix)
            else:
                self._log(logging.ERROR, "stopping: %s; %s, then start pirsyncd again", verdict.meaning, verdict.fix)
            return verdict.exit_status
        elif retry_at is not None:
            wait = retry_at - now
            self.next_retry = time.time() + wait
            if self.retry_since is None:
                self.retry_since = time.time()
            early = verdict.outcome == Outcome.PARTIAL and self.policy.failures < 3
            level = logging.WARNING if early else logging.ERROR
            self._log(level, "sync failed (%s); %d paths kept, retry in %.0f s", verdict.meaning,
                    self.pending_count, wait)
        return None

    def _settle_failing(self, batch: Batch, result: JobResult, now: float) -> list[str]:
        """After a job: paths rsync could not send become failing (their own backoff), paths
        sent again are failing no more (returned), deletions rsync skipped are sent again at once."""
        self.failing.record(result.failed_paths, now)
        cleared = self.failing.clear(batch.covered_paths(), keep=result.failed_paths)
        if result.failed_paths:
            self._log(logging.WARNING, "%s; retried with their own backoff while other changes go on",
                      self.failing.summary())
        if cleared:
            self._log(logging.INFO, "no longer failing: %s", ", ".join(sorted(cleared)[:10]))
        for kind, paths in ((ChangeKind.REMOVED, result.removed_again), (ChangeKind.ENTRIES, result.entries_again),
                            (ChangeKind.NEW_DIR, result.whole_again)):
            for path in paths:
                self.pending.add(Change(kind, path, True), now)
        if result.deletions_skipped_in_full:
            self._log(logging.WARNING, "rsync skipped the deletions of this full sync because of the failing paths; "
                        "a full sync follows once they are sent")
            self.full_sync_when_failing_clears = True
        elif batch.full:
            self.full_sync_when_failing_clears = False
        if self.full_sync_when_failing_clears and not self.failing:
            self.full_sync_when_failing_clears = False
            self.request_full_sync(now, at_once=True, reason="failing-cleared")
        return cleared

    def _report_deletion_path(self, why: str) -> None:
        self._log(*self.deletion.describe(why, self.config.rsync_binary))

    # -- start ----------------------------------------------------------------------------
    def start_full(self, at: float, run: bool) -> None:
        """At start: the initial full sync at ``at``, or (``run`` False) trust the destination."""
        if run:
            self.request_full_sync(at, at_once=True, reason="initial")
        else:
            self.policy.job_succeeded()
            self.synced_seq = 0

    def start_warm(self, changes: list[Change], failing: list[str], now: float) -> None:
        """At start: what changed while the daemon was down, and what was failing, sent at once."""
        self.add(changes, set(), now)
        for path in failing:
            self._retry_failing_path(path, now)
        if not self.pending:
            self.start_full(now, run=False)
            return
        self.pending.make_due(now)

    def log_start(self, message: str) -> None:
        self._log(logging.INFO, "%s", message)

    def announce(self) -> None:
        """At start: say how deletions go, when the config decides it (or the probe has)."""
        if self.deletion.uses_missing_args is not None:
            self._report_deletion_path(f"deletion_mode = {self.config.deletion_mode}")
        else:
            self.collect_probe()

    def collect_probe(self) -> None:
        if self.deletion.collect():
            self._report_deletion_path("probed")

    # -- reload ---------------------------------------------------------------------------
    def reconfigure(self, config: Config) -> None:
        """A reload: new settings; held and failed are tried again."""
        if self.policy.state == ReplicaState.HELD:
            self._log(logging.INFO, "reload: releasing the held sync")
        self.config = config
        self.pending.delay = config.delay
        self.pending.full_sync_threshold = config.full_sync_threshold
        self.failing.retry_max_interval = config.retry_max_interval
        self.policy.retry_max_interval, self.policy.time_limit = config.retry_max_interval, config.time_limit
        self.policy.release()
        self.deletion.reconfigure(config.deletion_mode)
        self.next_retry = None

    # -- reporting --------------------------------------------------------------------------
    def snapshot(self, wall_offset: float) -> dict[str, Any]:
        """What readers see of this replica (plain values)."""
        return {
            "state": self.policy.state.value, "pending": self.pending_count, "synced_seq": self.synced_seq,
            "last_success": self.last_success, "last_sync": self.last_sync, "last_error": self.last_error,
            "next_retry": self.next_retry, "retry_since": self.retry_since, "reason": self.policy.reason,
            "deletion_path": self.deletion.name, "rsync_version": self.deletion.rsync_version or None,
            "failing": self.failing.summary() or None, "failing_paths": self.failing.snapshot(wall_offset),
            "files_sent_in_job": self.files_sent_in_job,
            "job": None if self.job is None else ("full" if self.job.batch.full else "batch"),
            "warning": HELD_WARNING if self.policy.state == ReplicaState.HELD else None,
            "full_sync_owed": self.pending.full_sync_needed,
            "oldest_unsent": None if (oldest := self.oldest_unsent_at) is None else round(oldest + wall_offset, 1),
            "counters": self.tally.snapshot(),
            "progress": self.progress_snapshot(),
        }

    def progress_snapshot(self) -> dict[str, Any] | None:
        """The full sync's figures: while it runs (``active``), and those of the last one after it
        ended (100 % once it succeeded); None before the first."""
        if self.progress is None:
            return None
        view = self.progress.snapshot(time.monotonic())
        if self.progress.active and not (self.job is not None and self.job.batch.full):
            view.update(active=False, rate=None, eta_s=None)  # owed again: waiting for its retry
        return view

