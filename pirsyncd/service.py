"""The daemon: one selectors loop over inotify, signals and the running rsync.

    signals ─┐
    inotify ─┼─> select(timeout = earliest deadline) ─> Watcher.read_changes ─> Pending
    rsync   ─┘        │                                                  │ deadline due
                      └── WATCHDOG=1 while healthy        Pending.take ─> SyncJob ─> rsync runs

The loop is the only thread. It pings the watchdog itself, so a wedged loop stops
pinging and systemd restarts it. A failing destination is not unhealthy: it shows
in STATUS= and the journal, and retries back off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable

from pirsyncd import exitcodes, notify, rsync
from pirsyncd.config import Config, ConfigError
from pirsyncd.destination import SSH
from pirsyncd.events import CHANGED, CREATED_DIR, REMOVED, RESCAN, ROOT_LOST, Change
from pirsyncd.failing import FailingPaths
from pirsyncd.filters import Excluder
from pirsyncd.hardlinks import HardLinkIndex
from pirsyncd.jobs import SyncJob, close_shared_connection, probe_delete_missing_args
from pirsyncd.pending import Pending
from pirsyncd.runner import RsyncRun
from pirsyncd.safety import (
    SourceIdentity,
    SourceProblem,
    check_source,
    describe_identity_change,
    preflight,
    source_identity,
)
from pirsyncd.signals import SignalInbox
from pirsyncd.statusreport import StatusReport
from pirsyncd.watcher import Watcher

log = logging.getLogger("pirsyncd")

SOURCE_RECHECK_INTERVAL = 5.0
KILL_GRACE = 10.0  # seconds a stopped rsync gets before SIGKILL
UNWATCHED_RESYNC_INTERVAL = 60.0


# deletion_mode -> whether batches use --delete-missing-args (None: probe the rsync)
_DELETION_MODES: dict[str, bool | None] = {"auto": None, "missing-args": True, "parents": False}


class Service:
    def __init__(self, config: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.reload_config = reload_config
        self.excluder = Excluder(config.exclude)
        self.pending = Pending(config.delay, config.full_sync_threshold)
        self.report = StatusReport(config)
        self.selector = selectors.DefaultSelector()
        self.watcher: Watcher | None = None
        self.job: SyncJob | None = None
        self.retry_at: float | None = None
        self.failures = 0
        self.vanished_in_a_row = 0
        self.rewatch_needed = False
        self.unwatched_seen = 0
        self.held: str | None = None  # why syncing waits for the operator (max_delete)
        self._limit_reported = False
        self.next_full_sync_at: float | None = None
        self.source_lost_reason: str | None = None
        self.source_check_at: float | None = None
        self.stop_deadline: float | None = None
        self.exit_status: int | None = None
        self.delete_missing_args: bool | None = _DELETION_MODES[config.deletion_mode]
        self.failing = FailingPaths(config.retry_max_interval)
        self.full_sync_when_failing_clears = False
        self.source_identity: SourceIdentity | None = None
        self.hard_links = HardLinkIndex(config.source)
        self.changed_inodes: set[tuple[int, int]] = set()
        self.control_path: str | None = None
        self.control_directory = ""
        self.watchdog_interval = notify.watchdog_interval()
        self.next_watchdog_at = time.monotonic()

    # -- set-up --------------------------------------------------------------
    def _start_watching(self, expected: SourceIdentity | None = None) -> None:
        """(Re)build every watch; the old watcher stays in place if the new one fails.
        With ``expected``, the source must still be that directory (SourceProblem if not)."""
        watcher = Watcher(self.config.source, self.excluder, self.config.debug_events)
        try:
            identity = source_identity(self.config.source)
            if expected is not None and not identity.same_directory(expected):
                raise SourceProblem(describe_identity_change(self.config.source, expected) or "", exitcodes.NO_SOURCE)
            watcher.watch_root()
            if not source_identity(self.config.source).same_directory(identity):
                raise SourceProblem(f"the source {self.config.source} changed while it was being watched",
                                    exitcodes.NO_SOURCE)
        except (OSError, SourceProblem):
            watcher.close()
            raise
        self.source_identity = identity
        self.report.source_identity = identity
        if self.watcher is not None:
            self.selector.unregister(self.watcher)
            self.watcher.close()
        self.watcher = watcher
        self._limit_reported = False
        self.selector.register(self.watcher, selectors.EVENT_READ, "inotify")
        self.report.watched_dirs = self.watcher.watched_count
        if self.watcher.limit_reached:
            self._report_watch_limit()

    def run(self) -> int:
        """Run until stopped; return the exit status."""
        self.signals = SignalInbox()
        self.selector.register(self.signals, selectors.EVENT_READ, "signal")
        if self.config.destination.kind == SSH:
            # One ssh connection shared by all runs (ControlMaster), in a private directory.
            self.control_directory = tempfile.mkdtemp(prefix="pirsyncd-ssh-")
            self.control_path = os.path.join(self.control_directory, "%C")
        try:
            self._start_watching()
        except OSError as error:
            log.error("cannot watch the source %s: %s; check that it is readable and that "
                      "fs.inotify.max_user_watches and max_user_instances are not exhausted",
                      self.config.source, error.strerror)
            return exitcodes.OS_ERROR
        except SourceProblem as problem:
            log.error("%s; start pirsyncd again once it stays put", problem)
            return problem.exit_status
        if self.config.initial_sync:
            self.pending.request_full_sync()
            self.report.state = "initial-sync"
        else:
            self.report.state = "in-sync"
            self.report.synced_seq = 0
        self._schedule_full_resync()
        self.report.publish(pending=self._pending_count(), force=True)
        notify.send("READY=1", f"STATUS={self.report.status_line()}")
        log.info("watching %s (%d directories), mirroring to %s", self.config.source,
                 self.report.watched_dirs, self.config.destination.text)
        if self.delete_missing_args is not None:
            self._report_deletion_path(f"deletion_mode = {self.config.deletion_mode}")
        while self.exit_status is None:
            self._turn()
        self._shut_down()
        return self.exit_status

    # -- the loop ------------------------------------------------------------
    def _deadlines(self) -> list[float]:
        deadlines = []
        if self.watchdog_interval:
            deadlines.append(self.next_watchdog_at)
        if self.job is None and self.source_lost_reason is None and not self.held:
            due = self.pending.deadline()
            if due is not None:
                due = max(due, self.retry_at or 0.0)
                deadlines.append(0.0 if self.stop_deadline is not None and self.retry_at is None else due)
        run = self.job.run if self.job is not None else None
        if run is not None and run.killed_for is not None:
            deadlines.append(run.stopped_at + KILL_GRACE)
        elif run is not None and self.job is not None and not self.job.batch.full:
            deadlines.append(run.started_at + self.config.time_limit)
        failing_due = self.failing.deadline() if self.source_lost_reason is None and not self.held else None
        for moment in (self.next_full_sync_at, self.source_check_at, self.stop_deadline,
                       self.report.publish_due(), failing_due):
            if moment is not None:
                deadlines.append(moment)
        return deadlines

    def _turn(self) -> None:
        deadlines = self._deadlines()
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        signals_received: list[int] = []
        for key, mask in self.selector.select(timeout):
            if key.data == "inotify":
                self._read_events()
            elif key.data == "signal":
                signals_received = self.signals.drain()
            elif self.job is not None and self.job.run is not None:
                self._service_rsync(key.data, mask)
        self._handle_signals(signals_received)
        now = time.monotonic()
        self._check_timers(now)
        if self.exit_status is None:
            self._maybe_start_job(now)
        if self.watchdog_interval and now >= self.next_watchdog_at:
            if self._healthy(now):
                notify.send("WATCHDOG=1")
                self.report.heartbeat()
            self.next_watchdog_at = now + self.watchdog_interval
        self.report.publish(pending=self._pending_count())

    def _healthy(self, now: float) -> bool:
        if self.watcher is None or (not self.watcher.root_alive and self.source_lost_reason is None):
            return False
        run = self.job.run if self.job else None
        # A run that survived its own time limit by far means our kill did not work.
        return not (run is not None and not self.job.batch.full  # type: ignore[union-attr]
                    and now - run.started_at > 2 * self.config.time_limit + 30)

    def _pending_count(self) -> int:
        return self.pending.count + (self.job.batch.path_count if self.job else 0)

    def _read_events(self) -> None:
        assert self.watcher is not None
        changes = self.watcher.read_changes()
        if not changes:
            return
        now = time.monotonic()
        self.report.change_seq += 1
        for change in changes:
            self._apply_change(change, now)
        if self.rewatch_needed and self.source_lost_reason is None:
            self.rewatch_needed = False
            try:
                self._start_watching(expected=self.source_identity)
            except OSError as error:
                self._lose_source(f"the source cannot be watched again after the overflow ({error.strerror})")
            except SourceProblem as problem:
                self._lose_source(str(problem))
        assert self.watcher is not None
        if len(self.watcher.unwatched) > self.unwatched_seen:
            self._schedule_full_resync()  # what cannot be watched is covered by full syncs
        self.unwatched_seen = len(self.watcher.unwatched)
        self.report.watched_dirs = self.watcher.watched_count
        if self.watcher.limit_reached and self.watcher.unwatched:
            self._report_watch_limit()
        if self.pending.count >= self.config.trigger_paths and not self.pending.full_sync_needed:
            self.pending.first_change_at = self.pending.last_change_at = now - self.config.delay

    def _apply_change(self, change: Change, now: float) -> None:
        if change.kind == RESCAN:
            log.warning("the inotify queue overflowed (fs.inotify.max_queued_events is too small for this "
                        "burst): events were lost, so a full sync follows")
            self.pending.request_full_sync()
            self.pending.add(change, now)
            self.rewatch_needed = True  # renames and new directories were lost with the events
            return
        if change.kind == ROOT_LOST:
            self._lose_source("the source root was deleted, moved or unmounted")
            return
        if self.excluder:
            if change.old_path and self.excluder.excludes(change.old_path, change.is_dir):
                change = Change(CREATED_DIR if change.is_dir else CHANGED, change.path, change.is_dir)
            if self.excluder.excludes(change.path, change.is_dir):
                if not change.old_path:
                    return
                change = Change(REMOVED, change.old_path, change.is_dir)
        if change.kind == CHANGED and not change.is_dir and not self.pending.is_changed(change.path):
            # Remember which inode a multi-link file had when it changed: its other names
            # must be sent too, even if this name points elsewhere by the time we send.
            # Once per pending path: its inode only changes through events that reset it.
            try:
                status = os.lstat(os.path.join(self.config.source, change.path))
            except OSError:
                pass
            else:
                if status.st_nlink > 1 and stat.S_ISREG(status.st_mode):
                    self.changed_inodes.add((status.st_dev, status.st_ino))
        self.pending.add(change, now)

    def _handle_signals(self, received: list[int]) -> None:
        for number in received:
            if number in (signal.SIGTERM, signal.SIGINT):
                self._begin_stop(signal.Signals(number).name)
            elif number == signal.SIGHUP:
                self._reload()
            elif number == signal.SIGUSR1:
                # A sync barrier: every change made before the signal is in the inotify queue now.
                if self.watcher is not None:
                    self._read_events()
                self.report.barrier(self._pending_count() > 0 or self.job is not None)

    # -- timers ----------------------------------------------------------------
    def _check_timers(self, now: float) -> None:
        if self.stop_deadline is not None and now >= self.stop_deadline:
            self._stop_now(f"stop_timeout ({self.config.stop_timeout:g} s) passed")
            return
        if (self.stop_deadline is not None and self.job is None
                and (not self.pending or self.retry_at or self.source_lost_reason or self.held)):
            if self.pending:
                log.warning("stopping with %d changes not sent (%s); the next start runs a full sync",
                            self._pending_count(), self.source_lost_reason or "the destination is failing")
            self.exit_status = exitcodes.OK
            return
        run = self.job.run if self.job else None
        if run is not None and run.killed_for is not None and now >= run.stopped_at + KILL_GRACE:
            log.error("rsync ignored SIGTERM for %g s (%s): killing it", KILL_GRACE, run.killed_for)
            run.kill()
        if (run is not None and self.job is not None and not self.job.batch.full
                and run.killed_for is None and run.elapsed() > self.config.time_limit):
            log.error("rsync ran longer than time_limit (%g s): stopping it; the batch is retried",
                      self.config.time_limit)
            run.stop("time limit")
        if self.next_full_sync_at is not None and now >= self.next_full_sync_at:
            if self.watcher is not None and self.watcher.unwatched:
                self.watcher.retry_unwatched()
                self.report.watched_dirs = self.watcher.watched_count
                if not self.watcher.unwatched:
                    log.info("every directory is watched again")
                    self.report.warning = None
                    self._limit_reported = False
            log.info("periodic full sync")
            self.pending.request_full_sync()
            self.pending.last_change_at = self.pending.first_change_at = now
            self._schedule_full_resync()
        if self.source_check_at is not None and now >= self.source_check_at:
            self._recheck_source()
        failing_due = self.failing.deadline()
        if failing_due is not None and now >= failing_due and self.source_lost_reason is None and not self.held:
            for path in self.failing.take_due(now):
                self._retry_failing_path(path, now)
            self._publish_failing()

    def _retry_failing_path(self, path: str, now: float) -> None:
        """Send a failing path again, as what it is now."""
        if path == ".":
            self.pending.request_full_sync()
            self.pending.add(Change(CHANGED, ".", True), now)
            return
        try:
            is_dir = stat.S_ISDIR(os.lstat(os.path.join(self.config.source, path)).st_mode)
        except OSError:
            self.pending.add(Change(REMOVED, path, True), now)
            return
        self.pending.add(Change(CREATED_DIR, path, True) if is_dir else Change(CHANGED, path), now)

    def _publish_failing(self) -> None:
        self.report.failing_summary = self.failing.summary()
        self.report.failing_paths = self.failing.snapshot(time.time() - time.monotonic())

    def _schedule_full_resync(self) -> None:
        interval = self.config.full_resync_interval
        if self.watcher is not None and self.watcher.unwatched:
            interval = min(interval or UNWATCHED_RESYNC_INTERVAL, UNWATCHED_RESYNC_INTERVAL)
        self.next_full_sync_at = time.monotonic() + interval if interval else None

    def _report_watch_limit(self) -> None:
        assert self.watcher is not None
        if self._limit_reported:
            return
        self._limit_reported = True
        message, self.report.warning = self.watcher.limit_message(UNWATCHED_RESYNC_INTERVAL)
        log.error("%s", message)
        self._schedule_full_resync()

    # -- source safety -----------------------------------------------------------
    def _lose_source(self, reason: str) -> None:
        if self.source_lost_reason is None:
            log.error("%s: syncing stopped so the mirror is not wiped; it resumes when %s is back",
                      reason, self.config.source)
        self.source_lost_reason = reason
        self.report.state = "source-lost"
        self.report.warning = reason
        self.source_check_at = time.monotonic() + SOURCE_RECHECK_INTERVAL
        if self.job is not None and self.job.run is not None:
            self.job.run.stop("source lost")

    def _recheck_source(self) -> None:
        self.source_check_at = time.monotonic() + SOURCE_RECHECK_INTERVAL
        try:
            check_source(self.config)
            # Only the directory that was watched is the source: whatever else appears at its
            # path (an empty mount point, another file system) is not, until a reload says so.
            self._start_watching(expected=self.source_identity)
        except (SourceProblem, OSError) as problem:
            warning = f"{self.source_lost_reason}: {problem}"
            if self.report.warning != warning and isinstance(problem, SourceProblem):
                log.warning("%s; if this is the source now, reload to mirror it (systemctl reload, or SIGHUP)",
                            problem)
            self.report.warning = warning
            return
        log.info("the source %s is back: watching it again and running a full sync", self.config.source)
        self.source_lost_reason = None
        self.source_check_at = None
        self.report.warning = None
        self.pending.request_full_sync()

    # -- rsync jobs ----------------------------------------------------------------
    def _maybe_start_job(self, now: float) -> None:
        if self.job is not None or self.source_lost_reason is not None or self.held or not self.pending:
            return
        if self.retry_at is not None and now < self.retry_at:
            return
        due = self.pending.deadline()
        if due is None or (now < due and self.stop_deadline is None):
            return
        moved = (describe_identity_change(self.config.source, self.source_identity)
                 if self.source_identity is not None else None)
        if moved is not None:
            # Before every run, not only full syncs: a batch re-checking "." through an empty
            # mount point would wipe the mirror as surely as a full sync.
            self._lose_source(moved)
            return
        batch = self.pending.take(self.report.change_seq)
        if self.delete_missing_args is None and not batch.full:
            self._probe_rsync()
        if batch.full:
            try:
                check_source(self.config)
            except SourceProblem as problem:
                self.pending.put_back(batch, now)
                self._lose_source(str(problem))
                return
        self.job = SyncJob(self.config, batch, self.delete_missing_args is not False, self.report,
                           control_path=self.control_path, hard_links=self.hard_links,
                           changed_inodes=self.changed_inodes)
        self.changed_inodes = set()
        self.report.job_started(batch)
        self._next_run()

    def _probe_rsync(self) -> None:
        # Done once, after the initial sync (or before the first batch), not before the initial
        # sync: it would delay the start.
        self.delete_missing_args = probe_delete_missing_args(self.config.rsync_binary)
        self._report_deletion_path("probed")

    def _report_deletion_path(self, why: str) -> None:
        self.report.deletion_path = "missing-args" if self.delete_missing_args else "parents"
        if self.delete_missing_args:
            log.info("deletions: rsync --delete-missing-args (%s)", why)
        elif why == "probed":
            log.warning("this rsync mishandles --delete-missing-args with --files-from (%s); deletions "
                        "are sent by re-checking each deleted path's parent directory (its own entries)",
                        self.config.rsync_binary)
        else:
            log.info("deletions: re-checking each deleted path's parent directory (%s)", why)
        self.report.publish(self._pending_count(), force=True)

    def _next_run(self) -> None:
        assert self.job is not None
        run = self.job.start_next_run()
        if run is None:
            self._finish_job()
            return
        self.selector.register(run.exit_fd, selectors.EVENT_READ, "rsync-exit")
        self.selector.register(run.stdout, selectors.EVENT_READ, "rsync-stdout")
        self.selector.register(run.stderr, selectors.EVENT_READ, "rsync-stderr")
        if run.stdin_pending:
            self.selector.register(run.stdin, selectors.EVENT_WRITE, "rsync-stdin")

    def _service_rsync(self, what: str, mask: int) -> None:
        assert self.job is not None and self.job.run is not None
        run = self.job.run
        if what == "rsync-stdin":
            run.on_stdin_writable()
            if not run.stdin_pending:
                self.selector.unregister(run.stdin)
        elif what == "rsync-stdout":
            if not run.read_stdout():
                self.selector.unregister(run.stdout)
        elif what == "rsync-stderr":
            if not run.read_stderr():
                self.selector.unregister(run.stderr)
        elif what == "rsync-exit":
            self._on_run_exit(run)

    def _on_run_exit(self, run: RsyncRun) -> None:
        assert self.job is not None
        for stream in (run.stdin, run.stdout, run.stderr, run.exit_fd):
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(stream)
        verdict = self.job.finish_run()
        if verdict.outcome == rsync.VANISHED:
            # Files vanished while rsync ran: their events are queued, but send the batch's
            # paths again too rather than trust that.
            self.job.vanished = True
        if verdict.outcome in (rsync.OK, rsync.VANISHED):
            self._next_run()
            return
        if self.job.switch_to_fallback:
            self.delete_missing_args = False
            log.warning("this rsync mishandles --delete-missing-args; switching to the fallback")
        self._fail_job(verdict)

    def _finish_job(self) -> None:
        assert self.job is not None
        job, self.job = self.job, None
        self.vanished_in_a_row = self.vanished_in_a_row + 1 if job.vanished else 0
        if job.vanished and not job.batch.full:
            if self.vanished_in_a_row >= 3:
                log.warning("files keep vanishing during batches: a full sync follows")
                self.pending.request_full_sync()
            else:
                self.pending.put_back(job.batch, time.monotonic(), self._source_has)
        self._settle_failing(job)
        self.report.job_succeeded(job, self._pending_count(), complete=not job.vanished)
        if self.delete_missing_args is None:
            self._probe_rsync()
        if job.batch.full:
            self._schedule_full_resync()
        self.retry_at = None
        self.failures = 0

    def _settle_failing(self, job: SyncJob) -> None:
        """After a job: paths rsync could not send become failing (their own backoff), paths
        sent again are failing no more, deletions rsync skipped are sent again at once."""
        now = time.monotonic()
        batch = job.batch
        sent = ["."] if batch.full else [*batch.changed, *batch.fresh_dirs, *batch.moved_paths,
                                         *batch.directories, *(move.new_path for move in batch.moves)]
        self.failing.record(job.failed_paths, now)
        cleared = self.failing.clear(sent, keep=job.failed_paths)
        if job.failed_paths:
            log.warning("%s; retried with their own backoff while other changes go on",
                        self.failing.summary(), extra={"PIRSYNCD_FAILING": len(self.failing)})
        if cleared:
            log.info("no longer failing: %s", ", ".join(sorted(cleared)[:10]))
        for path in job.redo:
            self.pending.add(Change(REMOVED, path, True), now)
        if job.deletions_skipped_in_full:
            log.warning("rsync skipped the deletions of this full sync because of the failing paths; "
                        "a full sync follows once they are sent")
            self.full_sync_when_failing_clears = True
        elif batch.full:
            self.full_sync_when_failing_clears = False
        if self.full_sync_when_failing_clears and not self.failing:
            self.full_sync_when_failing_clears = False
            self.pending.request_full_sync()
            self.pending.add(Change(CHANGED, ".", True), now)
        self._publish_failing()

    def _fail_job(self, verdict: rsync.Verdict) -> None:
        assert self.job is not None
        job, self.job = self.job, None
        now = time.monotonic()
        self.pending.put_back(job.batch, now, self._source_has)
        if job.switch_to_fallback:
            return
        if verdict.outcome == rsync.DELETE_LIMIT:
            # Retrying would delete max_delete more each time: hold until a person decides.
            self.held = verdict.meaning
            self.report.state = "held"
            self.report.warning = ("deletions held: more than max_delete entries would be deleted; "
                                   "check the source, then raise max_delete and reload")
            log.error("sync held: %s; nothing more is sent until the configuration is reloaded "
                      "(systemctl reload, or SIGHUP); %d paths kept", verdict.fix, self._pending_count())
            self.report.publish(self._pending_count(), force=True)
            return
        if verdict.outcome == rsync.FATAL and self.stop_deadline is None:
            log.error("stopping: %s; %s, then start pirsyncd again", verdict.meaning, verdict.fix)
            self.report.state = "failed"
            self.exit_status = verdict.exit_status
            return
        self.failures += 1
        backoff = min(self.config.retry_max_interval, 2.0 ** (self.failures - 1))
        self.retry_at = now + backoff
        self.report.retrying(verdict, time.time() + backoff)
        level = logging.WARNING if verdict.outcome in (rsync.PARTIAL,) and self.failures < 3 else logging.ERROR
        log.log(level, "sync failed (%s); %d paths kept, retry in %.0f s", verdict.meaning,
                self._pending_count(), backoff)

    # -- reload and stop ----------------------------------------------------------
    def _reload(self) -> None:
        notify.send("RELOADING=1")
        if self.reload_config is None:
            notify.send("READY=1")
            return
        try:
            new = self.reload_config()
            problems = [message for _, message in preflight(new)]
            if problems:
                raise ConfigError(problems)
        except ConfigError as error:
            for problem in error.problems:
                log.error("reload: %s", problem)
            log.error("reload failed: keeping the running configuration")
            notify.send("READY=1", f"STATUS={self.report.status_line()}")
            return
        old, self.config = self.config, new
        self.failing.retry_max_interval = new.retry_max_interval
        if self.source_lost_reason is not None:
            self.source_identity = None  # a reload names the source anew: take what is there now
            self.source_check_at = time.monotonic()
        if self.held:
            log.info("reload: releasing the held sync")
            self.held = None
            self.report.warning = None
        self.report.config = new
        self.pending.delay = new.delay
        self.pending.full_sync_threshold = new.full_sync_threshold
        if (old.source, old.destination, old.exclude) != (new.source, new.destination, new.exclude):
            self.excluder = Excluder(new.exclude)
            try:
                self._start_watching()
            except (OSError, SourceProblem) as error:
                log.error("reload: cannot watch %s: %s; keeping the running configuration", new.source,
                          error.strerror if isinstance(error, OSError) else error)
                self.config, self.excluder = old, Excluder(old.exclude)
                self.report.config = old
                notify.send("READY=1", f"STATUS={self.report.status_line()}")
                return
            self.hard_links = HardLinkIndex(new.source)
            self.pending.request_full_sync()
        self._schedule_full_resync()
        log.info("reloaded the configuration from %s", new.origin)
        notify.send("READY=1", f"STATUS={self.report.status_line()}")

    def _source_has(self, path: str) -> bool:
        return os.path.lexists(os.path.join(self.config.source, path))

    def _begin_stop(self, why: str) -> None:
        if self.stop_deadline is not None:
            self._stop_now(f"second {why}")
            return
        log.info("%s: stopping after sending what is pending (at most %g s)", why, self.config.stop_timeout)
        notify.send("STOPPING=1")
        self.report.state = "stopping"
        self.stop_deadline = time.monotonic() + self.config.stop_timeout

    def _stop_now(self, why: str) -> None:
        if self.job is not None and self.job.run is not None:
            log.warning("%s: stopping rsync; the next start runs a full sync", why)
            self.job.run.stop(why)
        self.exit_status = exitcodes.OK

    def _shut_down(self) -> None:
        if self.job is not None and self.job.run is not None:
            run = self.job.run
            run.stop("shutting down")
            try:
                run.process.wait(timeout=5)
            except Exception:
                run.kill()
            run.finish()
        if self.watcher is not None:
            self.watcher.close()
        if self.control_path is not None:
            close_shared_connection(self.config, self.control_path)
            shutil.rmtree(self.control_directory, ignore_errors=True)
        self.report.state = "stopped" if self.report.state != "failed" else "failed"
        self.report.publish(pending=self._pending_count(), force=True)
        self.job = None
