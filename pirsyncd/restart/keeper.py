"""Restarts that are not full syncs: at start, read the state and decide for each destination
(warm: what changed since the watermark; full: why); while running, write the state when
everything is in sync, and mark a destination's layout as moved on before its next job.

    start:   state file ─> judge ─> the watch walk (inotify), or the mark then a scan of the
             directories (fanotify) ─> WarmScan: the tree against the index, find -newerct
             ─> each replica: its changes (warm) or a full sync (the reason in the log, status)
    running: all in sync, nothing pending ─> drain the queue (inotify, or fanotify until
             empty) ─> watermark = then - MARGIN ─> STATE_FILE.dirs (when the tree changed)
             ─> STATE_FILE

The tree is the inotify watcher's tree of watched directories, or with fanotify the source
side's directory index (:mod:`pirsyncd.source.dirindex`). That index costs a scan of every
directory: at a warm start before it goes on (like the inotify watch walk, minus the watches);
otherwise it is begun, in bounded steps of the loop, the first time everything is in sync (a
cold start's full sync starts at once, untouched), and kept current from the events after
that. The state is written only while it has no scan left once the queue is drained; until
then, or after an overflow (a new index is built), the state on disk stays as it was (or is
gone: an overflow removes it) and a restart meanwhile is warm from the older state or full.
The index means the same with either backend: a state one wrote starts the other warm.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pirsyncd.config.parse import Config
from pirsyncd.edges.runner import Child
from pirsyncd.replica.policy import ReplicaState
from pirsyncd.replica.replica import Replica
from pirsyncd.restart import statefile
from pirsyncd.restart.statefile import Header, StateUnusable
from pirsyncd.restart.warmscan import WarmScan
from pirsyncd.source.events import WatchTree
from pirsyncd.source.identity import source_identity
from pirsyncd.source.intake import SourceSide

log = logging.getLogger("pirsyncd")


def default_state_path(instance: str, state_directory: str | None = None) -> str | None:
    """$STATE_DIRECTORY/NAME.state under systemd; otherwise none.

    >>> default_state_path("www", "/var/lib/pirsyncd")
    '/var/lib/pirsyncd/www.state'
    """
    if state_directory is None:
        state_directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or None
    return os.path.join(state_directory, f"{instance}.state") if instance and state_directory else None


def all_in_sync(source: SourceSide, replicas: Sequence[Replica], source_settled: bool) -> bool:
    """Every destination has everything (but those held or failed): the watermark may advance
    (``source_settled``: the instance's state says the source is there and fully watched)."""
    if not source_settled or source.watcher is None or source.watcher.limit_reached:
        # (A directory that cannot be listed is not in the index: a warm start sends it whole.
        # One still being walked may not be watched yet, nor sent.)
        return False
    out = (ReplicaState.HELD, ReplicaState.FAILED)
    return all(in_sync(replica) or replica.policy.state in out for replica in replicas) and any(
        in_sync(replica) for replica in replicas)


def in_sync(replica: Replica) -> bool:
    """Nothing pending or running, and the last job (or the start) went well."""
    return replica.policy.state == ReplicaState.IN_SYNC and replica.job is None and not replica.pending


class StateKeeper:
    """The restart state of one instance: read once at start, written as the mirror advances."""

    def __init__(self, config: Config) -> None:
        self.path = config.state_file or default_state_path(config.instance)
        self.header: Header | None = None  # what is on disk, as far as we know
        self.start_info: dict[str, Any] = {"kind": "full", "changes": 0, "reason": None, "seconds": 0.0}
        self.activity = False  # a job ended since the last write: the watermark may advance
        self.next_write = 0.0  # monotonic: not before
        self._index: tuple[WatchTree, int] | None = None  # the tree (and its version) on disk
        self._interval = statefile.MIN_WRITE_INTERVAL
        self._complained = False

    # -- start ------------------------------------------------------------------------------
    def start(self, config: Config, source: SourceSide, replicas: Sequence[Replica], now: float) -> None:
        """Watch the source (OSError / SourceProblem as SourceSide.watch) and start each replica."""
        began = time.monotonic()
        scan, reason = None, self._why_not_warm(config)
        if reason is None:
            try:
                scan = self._prepare(config, source)
            except StateUnusable as problem:
                reason = str(problem)
        source.watch(at_once=True)  # before READY=1, and the scan judges the whole tree
        if scan is not None:
            # fanotify: the mark is placed (a directory scanned now cannot change unseen); the
            # scan judges the whole tree, as it judges inotify's after the watch walk.
            source.build_index(at_once=True)
        if scan is not None and source.watcher is not None and source.watcher.limit_reached:
            scan, reason = None, "some directories could not be watched (fs.inotify.max_user_watches)"
        if scan is not None and source.watcher is not None and source.watch_tree is None:
            scan, reason = None, f"the directory index could not be built ({source.index_problem})"
        if scan is not None and source.watcher is not None:
            reason = self._scan(scan, source, config)
            scan = None if reason else scan
        seconds = time.monotonic() - began
        warm = 0
        for index, replica in enumerate(replicas):
            entry, why = self._judge_replica(replica, scan, reason)
            if scan is None or entry is None:
                if config.startup_sync != "none":
                    replica.log_start(f"full sync at start: {why}")
                replica.start_full(now + index * INITIAL_SYNC_STAGGER, config.startup_sync != "none")
                self.start_info = {"kind": "none" if config.startup_sync == "none" else "full", "changes": 0,
                                   "reason": why, "seconds": round(seconds, 3)}
                continue
            assert self.header is not None
            changes = scan.result(trusted=bool(entry.get("layout")))
            failing = [str(path) for path in entry.get("failing") or []]
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.header.watermark))
            replica.log_start(f"warm start: {len(changes) + len(failing)} changes since {since} "
                              f"found in {seconds:.2f} s")
            replica.last_full_sync = entry.get("last_full")
            replica.start_warm(changes, failing, now)
            warm += 1
            if warm == len(replicas):
                self.start_info = {"kind": "warm", "changes": len(changes) + len(failing), "reason": None,
                                   "seconds": round(seconds, 3)}

    def _scan(self, scan: WarmScan, source: SourceSide, config: Config) -> str | None:
        """What changed: the directories from the tree just built (before any event is read),
        the entries from find, run here before the loop starts (like the watch walk, it is
        part of starting). A reason for a full sync when that does not work out."""
        tree = source.watch_tree
        assert tree is not None
        scan.directories(tree)
        scan.unreadable(source.unwatched | source.unindexed)
        child = Child(scan.find_command(source.kept_out()), b"", "warm scan", env={**os.environ, "LC_ALL": "C"},
                      output_limit=SCAN_OUTPUT_LIMIT)
        result = child.wait(SCAN_TIMEOUT)
        # 1: some entry could not be read. Directories we cannot read are sent whole, entries
        # gone meanwhile have their events; anything else (I/O errors, loops) is a doubt.
        doubts = [line for line in result.stderr.splitlines()
                  if not line.endswith((": Permission denied", ": No such file or directory"))]
        if result.status not in (0, 1) or result.stopped_for or (result.status == 1 and doubts):
            return f"the scan for changes failed (find exited {result.status}: {result.stderr_tail[-200:]})"
        if child.stdout_truncated:
            return "more changed while the daemon was down than a warm start looks at"
        scan.entries_found(result.stdout, tree)
        return None

    def _why_not_warm(self, config: Config) -> str | None:
        if config.startup_sync == "none":
            return "startup_sync = none"
        if config.startup_sync == "full":
            self._forget()
            return "startup_sync = full"
        if self.path is None:
            return "no state_file is set"
        return None

    def _prepare(self, config: Config, source: SourceSide) -> WarmScan:
        assert self.path is not None
        header = statefile.read_header(self.path)
        try:
            now = statefile.describe_source(config.source, source_identity(config.source), time.time())
            statefile.judge(header, now, config.full_resync_interval)
            index = statefile.read_index(self.path, header.index_token)
        except (StateUnusable, OSError):
            self._forget()  # a state we do not trust must not outlive this start
            raise
        self.header = header
        return WarmScan(config.source, source.excluder, header.watermark, index)

    def _forget(self) -> None:
        """Remove the state file (not its index: a new header names its own)."""
        self.header = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _judge_replica(self, replica: Replica, scan: WarmScan | None,
                       reason: str | None) -> tuple[dict[str, Any] | None, str]:
        if scan is None or self.header is None:
            return None, reason or "no state"
        try:
            return statefile.judge_destination(self.header, replica.config), ""
        except StateUnusable as problem:
            return None, str(problem)

    # -- running -------------------------------------------------------------------------------
    @property
    def watermark(self) -> float | None:
        return self.header.watermark if self.header is not None and self.header.destinations else None

    def changes_arrived(self, oldest_ctime_ns: int | None, overflow: bool) -> None:
        """Changes were read: if one is older than the watermark on disk (its event came late:
        mmap, a long write), or events were lost, the watermark on disk must come down now."""
        header = self.header
        if self.path is None or header is None:
            return
        if overflow:
            self._forget()
            return
        assert oldest_ctime_ns is not None
        if oldest_ctime_ns / 1e9 > header.watermark:
            return
        header.watermark = oldest_ctime_ns / 1e9 - statefile.MARGIN
        try:
            statefile.write_header(self.path, header)
        except OSError as error:
            self._cannot_write(error)

    def before_job(self, replica: Replica) -> None:
        """A job may change the destination's layout: the index no longer describes it, so a
        warm start must not replay renames there (it sends renamed directories whole)."""
        header = self.header
        if self.path is None or header is None:
            return
        entry = header.destinations.get(replica.config.destination_name)
        if entry is None or not entry.get("layout"):
            return
        entry["layout"] = False
        try:
            statefile.write_header(self.path, header)
        except OSError as error:
            self._cannot_write(error)

    def save(self, drain: Callable[[], None], config: Config, source: SourceSide, replicas: Sequence[Replica],
             source_settled: Callable[[], bool], now: float, final: bool = False) -> None:
        """Read everything queued (``drain``), then, if still all in sync (``source_settled``
        asked after the drain, which may have lost the source), write the statefile.

        With fanotify the directory index must have no scan left after the drain: a scan sees
        the disk as it is then, so one after the drain could record a rename whose event is
        unread, hence unsent. It is begun here the first time (then written a moment later),
        and finished at once at a clean stop (``final``), before the drain."""
        if self.path is None:
            self.activity = False  # no state_file: nothing to write, no index to build
            return
        for _ in range(FINAL_ROUNDS if final else 1):
            if final:
                with contextlib.suppress(OSError):  # (the source is gone: nothing is written)
                    source.build_index(at_once=True, seconds=FINAL_INDEX_SECONDS)
            taken = time.time()
            for _ in range(DRAIN_ROUNDS):
                drain()
                if source.drained:
                    break
            else:
                self.next_write = now + self._interval  # events keep coming: not now
                return
            if not all_in_sync(source, replicas, source_settled()):
                return
            if source.watch_tree is not None:
                self.write(taken - statefile.MARGIN, config, source, replicas, now)
                return
        with contextlib.suppress(OSError):
            source.build_index()
        self.next_write = now + INDEX_RETRY

    def write(self, watermark: float, config: Config, source: SourceSide, replicas: Sequence[Replica],
              now: float) -> None:
        """Everything is in sync: the watermark advances (``now``: monotonic)."""
        self.activity = False
        tree = source.watch_tree
        if self.path is None or tree is None or source.identity is None:
            return
        destinations = {}
        for replica in replicas:
            if in_sync(replica) and len(replica.failing) <= statefile.MAX_FAILING:
                destinations[replica.config.destination_name] = {
                    "destination": replica.config.destination.text,
                    "settings": statefile.destination_settings(replica.config), "layout": True,
                    "failing": sorted(replica.failing.paths), "last_full": replica.last_full_sync}
        if not destinations:
            return
        began = time.monotonic()
        try:
            token = self.header.index_token if self.header is not None else ""
            if self._index is None or self._index[0] is not tree or self._index[1] != tree.version or not token:
                token = statefile.write_index(self.path, _unambiguous(tree))
                self._index = (tree, tree.version)
            header = statefile.describe_source(config.source, source.identity, watermark, token, destinations)
            statefile.write_header(self.path, header)
        except OSError as error:
            self._cannot_write(error)
            return
        self.header = header
        self._complained = False
        self._interval = max(statefile.MIN_WRITE_INTERVAL, 20 * (time.monotonic() - began))
        self.next_write = now + self._interval

    def use_path(self, path: str | None) -> None:
        """A reload may name another state file: the next write writes its index too."""
        if path != self.path:
            self.path, self._index = path, None

    def _cannot_write(self, error: OSError) -> None:
        if not self._complained:
            log.error("cannot write the state file %s: %s; syncing goes on, but the next start runs a full sync "
                      "(check that its directory exists and is writable)", self.path, error.strerror)
            self._complained = True
        self._index = None
        self._forget()  # never leave a state that says more than is true


def _unambiguous(tree: WatchTree) -> Iterator[tuple[int, int, str]]:
    """The tree's directories but those whose inode number another one has too (btrfs
    subvolumes, overlayfs): the index cannot tell them apart, so a warm start sends them whole."""
    seen = collections.Counter(ino for ino, _, _ in tree.directories())
    return (entry for entry in tree.directories() if seen[entry[0]] == 1)


INITIAL_SYNC_STAGGER = 0.5  # seconds between the initial syncs of several destinations
SCAN_OUTPUT_LIMIT = 64 << 20  # bytes of find's list of changed entries; more: a full sync
SCAN_TIMEOUT = 120.0  # seconds; longer: a full sync (the start must stay within TimeoutStartSec)
DRAIN_ROUNDS = 8  # reads of a fanotify queue before a save gives up on emptying it (tries again later)
FINAL_ROUNDS = 3  # a clean stop's tries to have the directory index complete after the drain
FINAL_INDEX_SECONDS = 20.0  # a clean stop's time for the directory index still to be built (within TimeoutStopSec)
INDEX_RETRY = 1.0  # seconds: while the directory index is built, how often a save looks again
