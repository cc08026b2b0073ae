"""One pirsyncd instance: its source side, its replicas (one per destination) and its
own policy, and what happens on each event the loop hands over: changes read, a
deadline due, a signal, a child that exited.

    SourceSide ──changes──> Replica ... (one per destination)
        │                      └─ jobs: children the loop services
        └─ identity ──> InstancePolicy: its facts and timers

Everything that decides reads the instance's one state (:attr:`Instance.state`: a phase,
starting / running / stopping / stopped, and what holds sending back, if anything: a lost
source, a pause, a tree walk), never the facts it is made of.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from pirsyncd.config import exitcodes
from pirsyncd.config.destination import DestinationKind
from pirsyncd.config.parse import Config, ConfigError
from pirsyncd.edges import notify
from pirsyncd.edges.loop import Loop
from pirsyncd.edges.runner import Child, ChildResult
from pirsyncd.ops.auditor import PeriodicAudits, repair_changes
from pirsyncd.ops.metrics import MetricsFile
from pirsyncd.ops.operations import Operations
from pirsyncd.ops.report import Reporter, combine_destinations
from pirsyncd.ops.status import default_status_path
from pirsyncd.policy import UNWATCHED_RESYNC_INTERVAL, Hold, InstancePolicy, InstanceState
from pirsyncd.replica.fleet import make_replicas
from pirsyncd.replica.policy import ReplicaState, Timer
from pirsyncd.replica.preflight import local_destination_has_entries, preflight
from pirsyncd.replica.replica import Replica
from pirsyncd.replica.results import ReplicaReport
from pirsyncd.replica.runlog import RsyncOutputLog
from pirsyncd.replica.ssh import SharedConnections
from pirsyncd.restart.keeper import StateKeeper, all_in_sync, default_state_path
from pirsyncd.source.backend import FANOTIFY, BackendUnavailable
from pirsyncd.source.capabilities import NewMarkNeeded
from pirsyncd.source.events import Change, ChangeKind
from pirsyncd.source.identity import SourceProblem
from pirsyncd.source.intake import SourceSide

log = logging.getLogger("pirsyncd")

Deadline = tuple[float, Timer, "Replica | None"]
AT_ONCE = float("-inf")  # a deadline due in this turn of the loop (after it has read what is ready)


class Instance:
    """One instance at work: built from its config, started (watch, READY=1), then driven by
    the loop through :meth:`deadlines`, :meth:`on_timer`, :meth:`take_changes`, :meth:`start_jobs`,
    :meth:`on_signal` and the children it hands the loop, until :attr:`exit_status` is set."""

    def __init__(self, config: Config, reload_config: Callable[[], Config] | None, loop: Loop,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Nothing is watched or started yet (:meth:`start`); ``reload_config`` reads the config
        again on SIGHUP; ``clock`` is monotonic, a plain number in tests."""
        self.config = config
        self.reload_config = reload_config
        self.loop = loop
        self.clock = clock
        self.source = SourceSide(config.source, config.exclude, config.debug_events,
                                 one_file_system=config.one_file_system, watch_backend=config.watch_backend)
        self.rsync_output = RsyncOutputLog(config.rsync_log)
        self.replicas = make_replicas(config, self.rsync_output)
        self.policy = InstancePolicy(config.stop_timeout, config.full_resync_interval, notify.watchdog_interval())
        status_path = config.status_file or default_status_path(config.instance)
        self.reporter = Reporter(status_path, MetricsFile(config.metrics_file) if config.metrics_file else None)
        self.ops = Operations(config, status_path, loop.watch_child, clock)  # pause, hooks, counters
        self.warning: str | None = None
        self.heartbeat = time.time()
        self.final_state: str | None = None
        self.ssh = SharedConnections()
        self.keeper = StateKeeper(config)  # the restart state: a warm start, the watermark
        self.audits = PeriodicAudits()  # audit_interval: each destination's periodic audit
        self._next_start = 0

    @property
    def exit_status(self) -> int | None:
        """Set once the instance is done: the loop ends and the process exits with it."""
        return self.policy.exit_status

    @property
    def state(self) -> InstanceState:
        """The one state everything that decides reads (see :mod:`pirsyncd.policy`)."""
        return self.policy.state(paused=self.ops.paused, walking=self.source.walking)

    # -- start and end ------------------------------------------------------------------
    def start(self) -> int | None:
        """Watch the source and announce readiness; an exit status when that fails."""
        config = self.config
        self.ssh.open([replica.config for replica in self.replicas])
        for replica in self.replicas:  # the probe of the rsync runs while the source is walked
            replica.deletion.start_probe(replica.config.rsync_binary, replica.start_child)
        now = self.clock()
        try:
            self.keeper.start(config, self.source, self.replicas, now)  # watches, starts each replica
        except OSError as error:
            if self.source.attempted.backend == FANOTIFY:
                log.error("cannot watch the source %s with fanotify: %s; check that it is readable and that "
                          "fs.fanotify.max_user_groups and max_user_marks are not exhausted",
                          config.source, error.strerror)
            else:
                log.error("cannot watch the source %s: %s; check that it is readable and that "
                          "fs.inotify.max_user_watches and max_user_instances are not exhausted",
                          config.source, error.strerror)
            return exitcodes.OS_ERROR
        except BackendUnavailable as problem:
            log.error("%s", problem)
            return problem.exit_status
        except SourceProblem as problem:
            log.error("%s; start pirsyncd again once it stays put", problem)
            return problem.exit_status
        self.source.listen(self.loop, self.take_changes)
        self.ops.refresh_pause(0)
        self.audits.configure([(replica.name, replica.config) for replica in self.replicas], now)
        self.policy.started(now, unwatched=bool(self.source.unwatched))
        self.warning = self.source.limit_warning(UNWATCHED_RESYNC_INTERVAL)
        self.publish(force=True)
        notify.send("READY=1", f"STATUS={self.reporter.line}")
        watching = ("one fanotify mark" if self.source.backend.backend == FANOTIFY
                    else f"{self.source.watched_count} directories")
        log.info("watching %s (%s), mirroring to %s", config.source, watching,
                 ", ".join(f"{replica.name} ({replica.config.destination.text})" if len(self.replicas) > 1
                           else replica.config.destination.text for replica in self.replicas))
        for replica in self.replicas:
            replica.announce()
        return None

    def shut_down(self) -> None:
        """After the loop: stop the children, write the restart state after a clean stop with
        everything sent, and tell readers the final state."""
        for replica in self.replicas:
            replica.stop_job_and_wait("shutting down")
        self.audits.stop_all()
        self.ops.hooks.stop()
        if self.keeper.activity and self.policy.exit_status == exitcodes.OK:
            self.save_state(self.clock(), final=True)  # a clean stop with everything sent
        self.source.close()
        self.ssh.close([replica.config for replica in self.replicas])
        failed = any(replica.policy.state == ReplicaState.FAILED for replica in self.replicas)
        self.final_state = "failed" if failed and self.policy.exit_status else "stopped"
        self.publish(force=True)
        self.rsync_output.close()

    # -- the loop's table ------------------------------------------------------------------
    def deadlines(self) -> list[Deadline]:
        """The one table: what is due when, read for the timeout and for what to do."""
        table: list[Deadline] = [(at, timer, None) for timer, at in self.policy.deadlines().items()]
        # At parallel_syncs running jobs, a replica waiting for a slot is woken by a job's end.
        full = sum(replica.job is not None for replica in self.replicas) >= self.config.parallel_syncs
        state = self.state
        for replica in self.replicas:
            auditing = self.audits.running(replica.name)  # its sync waits for its audit
            table += [(at, timer, replica) for timer, at in
                      replica.deadlines(state.stopping, state.may_send).items()
                      if not ((full or auditing) and timer == Timer.BATCH)]
            audit_at = self.audits.due_at(replica.name, replica.synced_seq,
                                          not replica.pending_count and replica.job is None)
            if audit_at is not None and self._may_audit(replica):
                table.append((audit_at, Timer.AUDIT, replica))
        table += [(at, Timer.HOOK, None) for at in self.ops.hooks.deadlines()]
        if self.source.walking or self.source.indexing:
            table.append((AT_ONCE, Timer.WALK, None))
        publish = self.reporter.due()
        if publish is not None:
            table.append((publish, Timer.PUBLISH, None))
        if self.keeper.activity and all_in_sync(self.source, self.replicas, state.source_settled):
            table.append((self.keeper.next_write, Timer.STATE, None))
        return table

    def on_timer(self, timer: Timer, replica: Replica | None, now: float) -> None:
        """A deadline of the table is due: act on it (a replica's own, or the instance's)."""
        if timer == Timer.AUDIT and replica is not None:
            self._start_audit(replica)
        elif replica is not None:
            replica.on_timer(timer, now)
        elif timer == Timer.WATCHDOG:
            if self.healthy(now):
                notify.send("WATCHDOG=1")
                self.heartbeat = time.time()
                self.publish(force=True)
            self.policy.watchdog_pinged(now)
        elif timer == Timer.FULL_RESYNC:
            if self.source.retry_unwatched():
                self.warning = None
            log.info("periodic full sync")
            for each in self.replicas:
                each.request_full_sync(now, reason="watch-lost" if self.source.unwatched else "periodic")
            self.policy.schedule_full_resync(now, bool(self.source.unwatched))
        elif timer == Timer.SOURCE_CHECK:
            self._recheck_source(now)
        elif timer == Timer.STOP:
            self._stop_now(f"stop_timeout ({self.config.stop_timeout:g} s) passed")
        elif timer == Timer.PUBLISH:
            self.publish()
        elif timer == Timer.HOOK:
            self.ops.hooks.on_timer(now)
        elif timer == Timer.STATE:
            self.save_state(now)
        elif timer == Timer.WALK:
            self._note_unwatched(self.source.walk_step(), now)

    def healthy(self, now: float) -> bool:
        """For the watchdog: the source is watched (or known lost) and no job outlived its limit."""
        if not (self.source.root_alive or self.state.hold == Hold.SOURCE_LOST):
            return False
        return all(replica.policy.healthy(now) for replica in self.replicas)

    # -- changes ------------------------------------------------------------------------------
    def take_changes(self) -> None:
        """The source is readable: read what changed, hand it to every replica, and act on an
        overflow (full sync, watches rebuilt), a lost root or directories left unwatched."""
        now = self.clock()
        # An inode is noted unless every replica has the path pending as changed already.
        intake = self.source.read(lambda path: all(each.pending.is_changed(path) for each in self.replicas))
        self.ops.took_changes(bool(intake.changes), intake.overflow)
        if intake.oldest_ctime_ns is not None or intake.overflow:
            self.keeper.changes_arrived(intake.oldest_ctime_ns, intake.overflow)
        for replica in self.replicas:
            replica.add(intake.changes, intake.changed_inodes, now, self.source.change_seq)
            if intake.overflow:
                replica.request_full_sync(now, reason="overflow")
        if intake.root_lost:
            self.lose_source("the source root was deleted, moved or unmounted", now)
        elif intake.overflow and self.state.hold != Hold.SOURCE_LOST:
            # Renames and new directories were lost with the events: rebuild every watch.
            self._rewatch(now, "after the overflow")
        self._note_unwatched(intake.newly_unwatched, now)

    def _note_unwatched(self, newly_unwatched: bool, now: float) -> None:
        """Directories that could not be watched are covered by periodic full syncs; say so."""
        if newly_unwatched:
            self.policy.schedule_full_resync(now, unwatched=True)  # covered by full syncs
        self.warning = self.source.limit_warning(UNWATCHED_RESYNC_INTERVAL) or self.warning

    def _rewatch(self, now: float, why: str) -> bool:
        """Watch the source again from scratch (after an overflow); False when it is lost."""
        old = self.source.watcher
        try:
            self.source.watch(expected=self.source.identity)
        except NewMarkNeeded as problem:
            self._exit_for_a_new_mark(problem)
            return False
        except OSError as error:
            self.lose_source(f"the source cannot be watched again {why} ({error.strerror})", now)
            return False
        except SourceProblem as problem:
            self.lose_source(str(problem), now)
            return False
        self.source.listen(self.loop, self.take_changes, old)
        return True

    # -- jobs -------------------------------------------------------------------------------------
    def start_jobs(self, now: float) -> None:
        """Start the jobs that are due, while the state lets them (the source is there, not
        paused, every directory watched: after an overflow, the full sync starts once the
        re-watch is complete)."""
        if not self.state.may_send:
            return
        running = sum(replica.job is not None for replica in self.replicas)
        # Round robin from the replica after the one started last, within parallel_syncs.
        order = self.replicas[self._next_start:] + self.replicas[:self._next_start]
        for replica in order:
            state = self.state  # again: a job that ended at once may have found the source lost
            if running >= self.config.parallel_syncs or not state.may_send:
                return
            if self.audits.running(replica.name) or not replica.job_due(now, state.stopping):
                continue
            running += 1
            self._next_start = (self.replicas.index(replica) + 1) % len(self.replicas)
            moved = self.source.moved_away()
            if moved is not None:
                # Before every run, not only full syncs: a batch re-checking "." through an
                # empty mount point would wipe the mirror as surely as a full sync.
                self.lose_source(moved, now)
                return
            self.keeper.before_job(replica)
            child = replica.start_due_job(now, self.source.change_seq, self.source.hard_links, self.ssh.control_path,
                                          self.source.kept_out())
            self._after_step(replica, child, now)

    def _on_child_exit(self, replica: Replica, result: ChildResult) -> None:
        """A job's child ended: the job's next step."""
        now = self.clock()
        self._after_step(replica, replica.child_exited(result, now), now)

    def _after_step(self, replica: Replica, step: Child | ReplicaReport, now: float) -> None:
        """After a job step: service its next child, or act on how the job ended."""
        if isinstance(step, Child):
            self.loop.watch_child(step, lambda result: self._on_child_exit(replica, result))
            return
        self.keeper.activity = True
        if step.synced is not None:
            self.ops.job_synced(replica.name or "default", step.synced)
        if step.source_problem is not None:
            self.lose_source(str(step.source_problem), now)
        for path in self.source.watch_again(list(step.cleared)):
            for each in self.replicas:
                each.add([Change(ChangeKind.NEW_DIR, path, True)], set(), now)
        if step.exit_status is not None and not self.state.stopping and all(
                other.policy.state == ReplicaState.FAILED for other in self.replicas):
            self.policy.finish(step.exit_status)
        self.publish(force=True)

    # -- periodic audits ----------------------------------------------------------------------------
    def _may_audit(self, replica: Replica) -> bool:
        """A child of a destination's audit may start: it runs no job, it is not failing, syncing is allowed."""
        state = self.state
        return (state.may_send and not state.stopping and replica.job is None
                and replica.policy.state in (ReplicaState.IN_SYNC, ReplicaState.SYNCING))

    def _start_audit(self, replica: Replica) -> None:
        """Start the next child of a destination's periodic audit, when it may run now."""
        if not self._may_audit(replica) or self.audits.has_child(replica.name):
            return
        child = self.audits.step(replica.name, replica.config, self.source.kept_out())
        self.loop.watch_child(child, lambda result: self._on_audit_exit(replica, result))
        self.publish(force=True)

    def _on_audit_exit(self, replica: Replica, result: ChildResult) -> None:
        """An audit's child ended: record what it found, and with audit_repair send that again."""
        now = self.clock()
        found = self.audits.finished(replica.name, replica.config, result, now, self.source.change_seq)
        if found and replica.config.audit_repair and replica in self.replicas:
            source = replica.config.source

            def is_directory(path: str) -> bool:
                return os.path.isdir(os.path.join(source, path)) and not os.path.islink(os.path.join(source, path))
            replica.add(repair_changes(found, is_directory), set(), now, self.source.change_seq)
            replica.pending.make_due(now)
        self.publish(force=True)

    def save_state(self, now: float, final: bool = False) -> None:
        """Write the restart state, if everything is still in sync once what is queued is read
        (``final``: at a clean stop, a directory index still being built is finished first)."""
        self.keeper.save(self.take_changes, self.config, self.source, self.replicas,
                         lambda: self.state.source_settled, now, final)

    # -- the source ----------------------------------------------------------------------------------
    def lose_source(self, reason: str, now: float) -> None:
        """The source is gone or is another directory: stop every job and send nothing until
        it is back (rechecked on Timer.SOURCE_CHECK); the mirror is never wiped for it."""
        if self.policy.lose_source(reason, now):
            log.error("%s: syncing stopped so the mirror is not wiped; it resumes when %s is back",
                      reason, self.config.source)
        self.warning = reason
        for replica in self.replicas:
            replica.stop_job("source lost", now)
        self.publish(force=True)

    def _recheck_source(self, now: float) -> None:
        """Look at a lost source again: watch it and run a full sync once it is back and safe."""
        config = self.config
        old = self.source.watcher
        try:
            local = [replica.config.destination.path for replica in self.replicas
                     if replica.config.destination.kind == DestinationKind.LOCAL]
            self.source.recheck(config.allow_empty_source,
                                lambda: any(local_destination_has_entries(path) for path in local))
        except NewMarkNeeded as problem:
            self._exit_for_a_new_mark(problem)
            return
        except (SourceProblem, OSError) as problem:
            warning = f"{self.policy.lost_reason}: {problem}"
            if self.warning != warning and isinstance(problem, SourceProblem):
                log.warning("%s; if this is the source now, reload to mirror it (systemctl reload, or SIGHUP)",
                            problem)
            self.warning = warning
            self.policy.source_still_lost(now)
            return
        self.source.listen(self.loop, self.take_changes, old)
        log.info("the source %s is back: watching it again and running a full sync", config.source)
        self.policy.source_back()
        self.warning = None
        for replica in self.replicas:
            replica.request_full_sync(now, at_once=True, reason="source-back")

    def _exit_for_a_new_mark(self, problem: NewMarkNeeded) -> None:
        """The source is there, but only a restart can watch it (a new fanotify mark, and the
        privilege for it given up): exit with its status, for systemd to start the worker again."""
        log.error("%s", problem)
        for replica in self.replicas:
            replica.stop_job("a new fanotify mark is needed", self.clock())
        self.policy.finish(problem.exit_status)

    # -- signals ----------------------------------------------------------------------------------
    def on_signal(self, number: int) -> None:
        """SIGTERM/SIGINT: stop after sending what is pending; SIGHUP: reload; SIGUSR1: a sync
        barrier (pirsyncd wait); SIGUSR2: look at the pause file (pirsyncd pause, resume)."""
        if number in (signal.SIGTERM, signal.SIGINT):
            self._begin_stop(signal.Signals(number).name)
        elif number == signal.SIGHUP:
            self._reload()
        elif number == signal.SIGUSR1:
            # A sync barrier: every change made before the signal is in the inotify queue now.
            if self.source.watcher is not None:
                self.take_changes()
            seq = self.source.barrier()
            for replica in self.replicas:
                replica.reach_barrier(seq, self.clock())
            self.publish(force=True)
        elif number == signal.SIGUSR2 and self.ops.refresh_pause(
                sum(replica.pending_count for replica in self.replicas)):
            self.publish(force=True)  # pirsyncd pause / resume

    def _begin_stop(self, why: str) -> None:
        """Begin stopping (a second signal stops at once)."""
        if not self.policy.begin_stop(self.clock()):
            self._stop_now(f"second {why}")
            return
        log.info("%s: stopping after sending what is pending (at most %g s)", why, self.config.stop_timeout)
        notify.send("STOPPING=1")

    def _stop_now(self, why: str) -> None:
        """Stop the running rsyncs and exit: what they sent is owed to the next start's full sync."""
        for replica in self.replicas:
            if replica.child is not None:
                log.warning("%s: stopping rsync; the next start runs a full sync", why)
                replica.stop_job(why, self.clock())
        self.policy.finish(exitcodes.OK)

    def check_stopped(self) -> None:
        """While stopping: exit once nothing more can be sent."""
        state = self.state
        if self.ops.hooks.busy or not self.policy.may_exit(
                state, [(replica.policy, replica.has_pending) for replica in self.replicas]):
            return
        pending = sum(replica.pending_count for replica in self.replicas)
        if pending:
            why = ("paused" if state.hold == Hold.PAUSED else self.policy.lost_reason
                   if state.hold == Hold.SOURCE_LOST else "the destination is failing")
            log.warning("stopping with %d changes not sent (%s); the next start runs a full sync", pending, why)
        self.policy.finish(exitcodes.OK)

    # -- reload -------------------------------------------------------------------------------------
    def _reload(self) -> None:
        """SIGHUP: read the config again and apply it, or keep the running one and say why."""
        notify.send("RELOADING=1")
        try:
            if self.reload_config is not None:
                self._apply(self.reload_config())
        except ConfigError as error:
            for problem in error.problems:
                log.error("reload: %s", problem)
            log.error("reload failed: keeping the running configuration")
        notify.send("READY=1", f"STATUS={self.reporter.line}")

    def _apply(self, new: Config) -> None:
        """Apply a new config: the source watched anew if what is watched changed, the replicas
        matched to the destinations (:func:`make_replicas`), timers and files renamed; a
        ConfigError (nothing applied) when the new config cannot run."""
        problems = [message for _, message in preflight(new, look_at_destination=False)]
        if problems:
            raise ConfigError(problems)
        old, now = self.config, self.clock()
        if (old.source, old.exclude, old.one_file_system, old.watch_backend) != (
                new.source, new.exclude, new.one_file_system, new.watch_backend):
            source = SourceSide(new.source, new.exclude, new.debug_events, previous=self.source,
                                one_file_system=new.one_file_system, watch_backend=new.watch_backend)
            try:
                source.watch()
            except NewMarkNeeded:
                raise ConfigError([f"cannot watch {new.source}: it needs a new fanotify mark, and this worker gave up "
                                   "CAP_SYS_ADMIN after placing its first; restart it to apply this configuration"]
                                  ) from None
            except (OSError, SourceProblem) as error:
                raise ConfigError([f"cannot watch {new.source}: "
                                   f"{error.strerror if isinstance(error, OSError) else error}"]) from None
            self.source.close()
            source.listen(self.loop, self.take_changes, old=self.source.watcher)
            self.source = source
            self.policy.source_back()
            self.warning = None
        elif self.state.hold == Hold.SOURCE_LOST:
            self.source.identity = None  # a reload names the source anew: take what is there now
            self.policy.source_check_at = now
        self.config = new
        self.keeper.use_path(new.state_file or default_state_path(new.instance))
        self.policy.stop_timeout, self.policy.full_resync_interval = new.stop_timeout, new.full_resync_interval
        self.rsync_output.reopen(new.rsync_log)
        self.ops.reconfigure(new, self.reporter.path, sum(replica.pending_count for replica in self.replicas))
        self.replicas = make_replicas(new, self.rsync_output, keep=self.replicas, now=now, old=old)
        self.audits.configure([(replica.name, replica.config) for replica in self.replicas], now)
        self._next_start = 0
        self.policy.schedule_full_resync(now, bool(self.source.unwatched))
        log.info("reloaded the configuration from %s", new.origin)

    # -- reporting ---------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What readers see: the status file's keys (docs/CONTRACT.md)."""
        wall_offset = time.time() - self.clock()
        views = [{"name": replica.name, "destination": replica.config.destination.text,
                  **replica.snapshot(wall_offset), "audit": self.audits.snapshot(replica.name, wall_offset)}
                 for replica in self.replicas]
        whole = combine_destinations(views)
        label = self.state.label
        if self.final_state is not None:
            whole["state"] = self.final_state
        elif label is not None:
            whole["state"] = label
        identity = self.source.identity
        return {
            **whole, "instance": self.config.instance, "source": self.config.source,
            "config_file": self.config.origin if self.config.origin.startswith("/") else None,
            "watched_dirs": self.source.watched_count, "watch_backend": self.source.backend.backend,
            "watch_backend_reason": self.source.backend.reason, "heartbeat": self.heartbeat,
            "change_seq": self.source.change_seq, "barrier_requests": self.source.barrier_requests,
            "barrier_seq": self.source.barrier_seq, "warning": self.warning or whole["warning"],
            **self.ops.snapshot(), "watermark": self.keeper.watermark, "start": self.keeper.start_info,
            "source_identity": None if identity is None else {
                "device": identity.device, "inode": identity.inode, "mount_id": identity.mount_id},
        }

    def publish(self, force: bool = False) -> None:
        """Tell readers (after every event): on_failure on a destination's alarm, STATUS=, the files."""
        for replica in self.replicas:
            self.ops.observe(replica.name or "default", replica.policy.state, replica.policy.reason,
                             replica.last_error, self.policy.lost_reason, self.audits.drift_count(replica.name))
        now = self.clock()
        # What the snapshot's "state" is made of: while it stays, an update within the
        # reporter's interval waits, and no snapshot need be made for it.
        state_key = (self.final_state, self.state.label, tuple(replica.policy.state for replica in self.replicas))
        if not force and self.reporter.throttled(state_key, now):
            return
        self.reporter.publish(self.snapshot(), now, force, state_key)
