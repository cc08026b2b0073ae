"""Hooks: ``on_sync`` after each successful batch or full sync, ``on_failure`` when a destination
starts failing, is held or failed, or the source is lost, and once more when it recovers.

A hook is an argv (split like rsync_flags, never run by a shell), started through
:class:`pirsyncd.edges.runner.Child` and serviced by the loop like any rsync run, so it never blocks
or slows syncing. At most one call of each hook runs at a time: what happens meanwhile is
coalesced into the next call (on_sync: the paths and bytes add up; on_failure: the latest
event wins). Past ``hook_timeout`` it gets SIGTERM, then SIGKILL. Its output goes to the log,
its failures are logged and counted, and it is never retried.

on_sync's stdin: the paths the batch listed, then each entry rsync said it created, updated or
deleted (:mod:`pirsyncd.replica.itemize`; a new directory ``web`` gives ``web/index.html`` too),
each once, NUL-terminated; ``PIRSYNCD_COMPLETE=0`` when that list was cut at its bound.

    PIRSYNCD_EVENT=sync PIRSYNCD_KIND=batch PIRSYNCD_PATHS=3 ... on_sync  < "web\\0web/index.html\\0old\\0"
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

from pirsyncd.edges.runner import Child, ChildResult
from pirsyncd.replica.batch import Batch
from pirsyncd.replica.itemize import ItemizedChanges

log = logging.getLogger("pirsyncd")
hook_output_log = logging.getLogger("pirsyncd.hook")

KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a hook past its time limit
OUTPUT_LINES = 50  # lines of a hook's output logged per call
MAX_PATHS = 1_000_000  # a coalesced on_sync call sends at most this many paths (then PIRSYNCD_COMPLETE=0)

_DAEMON_ONLY = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"})

WatchChild = Callable[[Child, Callable[[ChildResult], None]], None]


@dataclasses.dataclass
class HookCall:
    """What one call of a hook is told (its environment; ``paths`` go to on_sync's stdin)."""

    event: str  # sync | failing | held | failed | source-lost | recovered
    destination: str
    kind: str = ""  # full | batch (sync)
    paths: list[str] = dataclasses.field(default_factory=list)
    path_count: int = 0
    bytes_sent: int = 0
    rsync_status: int | None = None
    error: str = ""
    complete: bool = True  # paths holds every entry rsync changed (not cut at a bound)

    @classmethod
    def after_sync(cls, destination: str, batch: Batch, bytes_sent: int, rsync_status: int,
                   changed: ItemizedChanges | None = None) -> HookCall:
        """The paths the batch listed (none for a full sync; a rename's old path, gone at the
        destination, too: a CDN purge wants it), then each entry rsync said it created, updated or
        deleted (``changed``: the files of a new directory sent whole, what a full sync changed)."""
        listed = [] if batch.full else [*batch.covered_paths(), *batch.directories,
                                        *(move.old_path for move in batch.moves)]
        paths = list(dict.fromkeys([*listed, *(changed.paths if changed is not None else ())]))
        return cls("sync", destination, "full" if batch.full else "batch", paths, len(paths), bytes_sent,
                   rsync_status, complete=changed is None or not changed.truncated)

    def coalesce(self, later: HookCall) -> HookCall:
        """This call, waiting, and a later one: the one call that stands for both (at most
        MAX_PATHS paths: past it the first ones, and not complete)."""
        if self.event != "sync" or later.event != "sync":
            return later
        paths = list(dict.fromkeys(self.paths + later.paths))
        complete = self.complete and later.complete and len(paths) <= MAX_PATHS
        full = "full" in (self.kind, later.kind)
        return HookCall("sync", later.destination, "full" if full else "batch", paths[:MAX_PATHS],
                        self.path_count + later.path_count, self.bytes_sent + later.bytes_sent,
                        later.rsync_status, later.error, complete)

    def environment(self, instance: str, hook: str) -> dict[str, str]:
        return {
            "PIRSYNCD_HOOK": hook, "PIRSYNCD_EVENT": self.event, "PIRSYNCD_INSTANCE": instance,
            "PIRSYNCD_DESTINATION": self.destination, "PIRSYNCD_KIND": self.kind,
            "PIRSYNCD_PATHS": str(self.path_count), "PIRSYNCD_BYTES": str(self.bytes_sent),
            "PIRSYNCD_RSYNC_STATUS": "" if self.rsync_status is None else str(self.rsync_status),
            "PIRSYNCD_ERROR": self.error, "PIRSYNCD_COMPLETE": "1" if self.complete else "0",
        }


class Hook:
    """One configured hook: its running call, the call waiting behind it, its counts."""

    def __init__(self, name: str, argv: tuple[str, ...], timeout: float, instance: str,
                 watch_child: WatchChild, clock: Callable[[], float]) -> None:
        self.name = name
        self.argv = argv
        self.timeout = timeout
        self.instance = instance
        self.watch_child = watch_child
        self.clock = clock
        self.running: Child | None = None
        self.started_at = 0.0
        self.waiting: HookCall | None = None
        self.results: dict[str, int] = {}  # ok | failed | timeout -> calls

    def fire(self, call: HookCall) -> None:
        if not self.argv:
            return
        if self.running is not None:
            self.waiting = call if self.waiting is None else self.waiting.coalesce(call)
            return
        self._start(call)

    def _start(self, call: HookCall) -> None:
        stdin = b"".join(os.fsencode(path) + b"\0" for path in call.paths) if call.event == "sync" else b""
        try:
            # The daemon's environment minus what is systemd's word to the daemon alone, and minus
            # PIRSYNCD_* variables it was started with: those the hook gets are this call's.
            inherited = {key: value for key, value in os.environ.items()
                         if key not in _DAEMON_ONLY and not key.startswith("PIRSYNCD_")}
            child = Child(list(self.argv), stdin, self.name,
                          env={**inherited, **call.environment(self.instance, self.name)})
        except OSError as error:
            log.error("%s hook %s cannot be started: %s; fix the command and reload", self.name, self.argv[0],
                      error.strerror)
            self._count("failed")
            return
        self.running, self.started_at = child, self.clock()
        self.watch_child(child, self._exited)

    def _exited(self, result: ChildResult) -> None:
        self.running = None
        output = result.stdout.decode(errors="replace").splitlines() + result.stderr.splitlines()
        for line in [line for line in output if line.strip()][-OUTPUT_LINES:]:
            hook_output_log.info("%s: %s", self.name, line)
        if result.stopped_for:
            log.error("%s hook killed: it ran longer than hook_timeout (%g s)", self.name, self.timeout,
                      extra={"PIRSYNCD_HOOK": self.name})
            self._count("timeout")
        elif result.status != 0:
            how = f"exit status {result.status}" if result.status > 0 else f"killed by signal {-result.status}"
            log.error("%s hook failed (%s); it is not retried", self.name, how, extra={"PIRSYNCD_HOOK": self.name})
            self._count("failed")
        else:
            self._count("ok")
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            self._start(waiting)

    def _count(self, result: str) -> None:
        self.results[result] = self.results.get(result, 0) + 1

    def deadline(self) -> float | None:
        if self.running is None:
            return None
        if self.running.stopped_for is not None:
            return self.started_at + self.timeout + KILL_GRACE
        return self.started_at + self.timeout

    def on_timer(self, now: float) -> None:
        child = self.running
        if child is None or now < self.started_at + self.timeout:
            return
        if child.stopped_for is None:
            child.stop("hook_timeout")
        elif now >= self.started_at + self.timeout + KILL_GRACE:
            child.kill()


class Hooks:
    """Both hooks, and what on_failure watches: each destination's alarm (failing, held, ...)."""

    def __init__(self, on_sync: tuple[str, ...], on_failure: tuple[str, ...], timeout: float, instance: str,
                 watch_child: WatchChild, clock: Callable[[], float]) -> None:
        self.on_sync = Hook("on_sync", on_sync, timeout, instance, watch_child, clock)
        self.on_failure = Hook("on_failure", on_failure, timeout, instance, watch_child, clock)
        self.alarms: dict[str, str] = {}  # destination -> "" (fine) or the event last told

    @property
    def all(self) -> tuple[Hook, Hook]:
        return self.on_sync, self.on_failure

    def reconfigure(self, on_sync: tuple[str, ...], on_failure: tuple[str, ...], timeout: float,
                    instance: str) -> None:
        """A reload: the next calls use the new commands (a running call finishes)."""
        for hook, argv in ((self.on_sync, on_sync), (self.on_failure, on_failure)):
            hook.argv, hook.timeout, hook.instance = argv, timeout, instance

    def synced(self, call: HookCall) -> None:
        self.on_sync.fire(call)

    def observe(self, destination: str, alarm: str, error: str) -> None:
        """Tell on_failure when a destination's alarm changes ("" means fine)."""
        before = self.alarms.get(destination, "")
        if alarm == before:
            return
        self.alarms[destination] = alarm
        self.on_failure.fire(HookCall(alarm or "recovered", destination, error=error if alarm else ""))

    @property
    def busy(self) -> bool:
        return any(hook.running is not None or hook.waiting is not None for hook in self.all)

    def deadlines(self) -> list[float]:
        return [at for at in (hook.deadline() for hook in self.all) if at is not None]

    def on_timer(self, now: float) -> None:
        for hook in self.all:
            hook.on_timer(now)

    def stop(self) -> None:
        """At shutdown: a hook still running is stopped (its waiting call is dropped)."""
        for hook in self.all:
            hook.waiting = None
            if hook.running is not None:
                hook.running.stop("shutting down")
                hook.running.wait(KILL_GRACE)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {hook.name: dict(sorted(hook.results.items())) for hook in self.all if hook.argv or hook.results}
