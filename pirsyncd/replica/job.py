"""A sync job: one Batch for one destination, run as a sequence of steps, each either a
little work done at once or a child the loop services (never a blocking call):

    [probe the rsync] ─> [scan hard links] ─> renames at the destination ─> rsync runs
    full sync: [empty source? list the destination] ─> rsync -a --delete

The steps are a generator that yields each command it needs run (or a probe child started
early) and is sent its ChildResult, so the order reads top to bottom; the job starts no
process itself, so it runs as well on fabricated results. What the job learnt travels back
as a value: the last step returns a JobResult (the verdict, failing paths, deletions to
send again, a source problem) that the replica acts on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections.abc import Callable, Generator, Mapping

from pirsyncd.config.destination import DestinationKind
from pirsyncd.config.parse import Config
from pirsyncd.edges.runner import Child, ChildResult, Command
from pirsyncd.replica import rsync
from pirsyncd.replica.batch import Batch, Move
from pirsyncd.replica.deletions import DeletionProbe
from pirsyncd.replica.plan import (
    Renames,
    SourceFacts,
    combine_renames,
    deletion_parents,
    plan_transfers,
    renames_assumed,
)
from pirsyncd.replica.preflight import local_destination_has_entries
from pirsyncd.replica.rsync import Outcome, RunMode, Verdict
from pirsyncd.source.hardlinks import HardLinkIndex, Key, build_scan_command
from pirsyncd.source.identity import SourceProblem, inspect_source, wipe_refusal

log = logging.getLogger("pirsyncd")

# What a step yields: a command for the edge to start, or a probe child started early.
Request = Command | Child
Steps = Generator[Request, ChildResult, None]
NOTHING_SENT = Verdict(Outcome.OK, "nothing to send")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One finished rsync run, for the journal and the status."""

    mode: RunMode
    paths: int
    result: ChildResult
    verdict: Verdict
    figures: dict[str, int]


@dataclasses.dataclass(frozen=True)
class JobResult:
    """What a finished job produced, for the replica to act on.

    ``verdict``: how the job ended (OK when every run did what it could). ``source_problem``:
    the source was found unsafe to mirror, nothing was sent. ``switch_to_fallback``: this
    rsync mishandles --delete-missing-args, the batch goes again by the parents path.
    ``vanished``: files vanished while rsync ran, the batch's paths go again.
    ``failed_paths``: source paths rsync could not send, with why (retried on their own).
    Deletions rsync skipped, to send again at once: ``removed_again`` (removed paths),
    ``entries_again`` (directories whose own entries to check), ``whole_again``
    (directories sent whole). ``deletions_skipped_in_full``: a full sync's deletions were
    skipped, so one follows once the failing paths are sent.
    """

    verdict: Verdict = NOTHING_SENT
    source_problem: SourceProblem | None = None
    switch_to_fallback: bool = False
    vanished: bool = False
    failed_paths: Mapping[str, str] = dataclasses.field(default_factory=dict)
    removed_again: tuple[str, ...] = ()
    entries_again: tuple[str, ...] = ()
    whole_again: tuple[str, ...] = ()
    deletions_skipped_in_full: bool = False


class SyncJob:
    """Runs one batch: ``start()`` and then ``child_exited(result)`` return the next command
    to run (or a running probe child to service), or the JobResult when the job is over."""

    def __init__(self, config: Config, batch: Batch, *, delete_missing_args: bool | None,
                 on_run: Callable[[RunRecord], None], on_probed: Callable[[bool, str], None] | None = None,
                 control_path: str | None = None, probe: DeletionProbe | None = None,
                 hard_links: HardLinkIndex | None = None, changed_inodes: set[Key] | None = None,
                 kept_out: list[str] | None = None) -> None:
        """``kept_out``: mount points below the source whose contents no run sends. ``probe``:
        the deletion probe's children, started by the replica, when this job must learn the
        answer (``delete_missing_args`` None); without one it answers False."""
        self.config = config
        self.kept_out = kept_out or []
        self.batch = batch
        self.delete_missing_args = delete_missing_args
        self.on_run = on_run
        self.on_probed = on_probed
        self.control_path = control_path if config.destination.kind == DestinationKind.SSH else None
        self.hard_links = hard_links
        self.changed_inodes = changed_inodes or set()
        self.probe = probe  # started by the replica (early, at start-up, or for this job), or None
        # What the steps learn, handed over as the JobResult when they are done.
        self._verdict = NOTHING_SENT
        self._source_problem: SourceProblem | None = None
        self._switch_to_fallback = False
        self._vanished = False
        self._failed_paths: dict[str, str] = {}  # existing source paths rsync could not send, with why
        self._removed_again: list[str] = []  # removed paths whose deletion rsync skipped
        self._entries_again: list[str] = []  # directories whose entries check rsync skipped
        self._whole_again: list[str] = []  # directories sent whole whose deletions rsync skipped
        self._checking: list[str] = []  # the directories the running DELETIONS run checks
        self._deletions_skipped_in_full = False
        self._steps = self._full_sync() if batch.full else self._batch()

    # -- driving ------------------------------------------------------------------
    def start(self) -> Request | JobResult:
        return self._advance(None)

    def child_exited(self, result: ChildResult) -> Request | JobResult:
        return self._advance(result)

    def _advance(self, result: ChildResult | None) -> Request | JobResult:
        try:
            return next(self._steps) if result is None else self._steps.send(result)
        except StopIteration:
            return self._result()

    def _result(self) -> JobResult:
        return JobResult(self._verdict, self._source_problem, self._switch_to_fallback, self._vanished,
                         dict(self._failed_paths), tuple(self._removed_again), tuple(self._entries_again),
                         tuple(self._whole_again), self._deletions_skipped_in_full)

    # -- the steps ------------------------------------------------------------------
    def _full_sync(self) -> Steps:
        config = self.config
        try:
            empty = inspect_source(config.source)
        except SourceProblem as problem:
            self._source_problem = problem
            return
        if empty and not config.allow_empty_source:
            if config.destination.kind == DestinationKind.LOCAL:
                has_entries = local_destination_has_entries(config.destination.path)
            else:
                listing = yield Command(rsync.build_listing_command(config), b"", "listing")
                has_entries = rsync.listing_shows_entries(listing.status, listing.stdout)
            if has_entries:
                self._source_problem = wipe_refusal(config.source)
                return
        if not (yield from self._transfer(RunMode.FULL, [])):
            return
        # Files known to have changed: the full sync's quick check may not have seen it.
        facts = SourceFacts(config.source)
        changed = [path for path in self.batch.changed if facts.kind(path) is False]
        if changed:
            yield from self._transfer(RunMode.CHANGES, changed)

    def _batch(self) -> Steps:
        batch, config = self.batch, self.config
        if self.delete_missing_args is None:
            yield from self._probe()
        linked: list[str] = []
        if self.hard_links is not None:
            linked = yield from self._other_hard_link_names()
        renames = yield from self._rename_at_destination()
        transfers = plan_transfers(batch, SourceFacts(config.source), renames,
                                   delete_missing_args=bool(self.delete_missing_args), linked_names=linked)
        new_dirs = [path for transfer in transfers if transfer.mode == RunMode.CHANGES for path in transfer.paths]
        for transfer in transfers:
            paths = list(transfer.paths)
            entries = paths
            if transfer.mode == RunMode.DELETIONS:
                # Decided now, not when planned: the tree may have changed since.
                paths = deletion_parents(SourceFacts(config.source), paths, new_dirs, transfer.own_entries)
                entries = rsync.deletion_entries(paths)
                if not paths:
                    continue
            self._checking = list(transfer.own_entries)
            if not (yield from self._transfer(transfer.mode, entries, paths, list(transfer.paths))):
                return

    def _probe(self) -> Steps:
        """Does this rsync handle --delete-missing-args with --files-from? (A tiny local transfer.)"""
        probe, self.probe = self.probe, None
        works, rsync_version = False, ""
        if probe is not None:
            try:
                version = yield probe.version
                transfer = yield probe.transfer
                works, rsync_version = probe.answer(version, transfer)
            finally:
                probe.close()
        self.delete_missing_args = works
        if self.on_probed is not None:
            self.on_probed(works, rsync_version)

    def _other_hard_link_names(self) -> Generator[Request, ChildResult, list[str]]:
        """A write through one name of a hard-linked file changes its other names too."""
        index = self.hard_links
        assert index is not None
        paths = self.batch.changed
        multi, scan = index.examine(paths, self.changed_inodes)
        if not multi and not self.changed_inodes:
            return []
        if scan or index.incomplete(multi):
            result = yield Command(build_scan_command(self.config.source, self.changed_inodes), b"", "hard links")
            index.load(result.stdout)
            multi, _ = index.examine(paths, self.changed_inodes)
        return index.other_names(paths, multi, self.changed_inodes)

    def _rename_at_destination(self) -> Generator[Request, ChildResult, Renames]:
        """Replay the batch's renames at the destination, so moved content is not sent again."""
        moves, destination = self.batch.moves, self.config.destination
        if not moves:
            return Renames()
        if destination.kind == DestinationKind.LOCAL:
            return combine_renames((move, _rename_at(destination.path, move)) for move in moves)
        renames = renames_assumed(moves, destination.kind)
        if destination.kind != DestinationKind.SSH:
            return renames
        root = destination.path.rstrip("/") or "/"
        pairs = [f"{root}/{path}" for move in moves for path in (move.old_path, move.new_path)]
        result = yield Command(rsync.build_remote_rename_command(self.config, self.control_path),
                               rsync.encode_path_list(pairs, escape_comments=False), "remote renames")
        if result.status != 0:
            # Whatever did not get renamed is sent by the quick check that follows.
            log.debug("remote renames exited %d (%s); the quick check sends the rest", result.status,
                      result.stderr_tail)
            return renames
        return dataclasses.replace(renames, renamed_away=frozenset(move.old_path for move in moves))

    def _transfer(self, mode: RunMode, entries: list[str], paths: list[str] | None = None,
                  deleted: list[str] | None = None) -> Generator[Request, ChildResult, bool]:
        """One rsync run; False when the job must end here (its verdict says why)."""
        config = self.config
        full = mode == RunMode.FULL
        argv = rsync.build_rsync_command(config, mode, control_path=self.control_path,
                                         delete_missing_args=bool(self.delete_missing_args), kept_out=self.kept_out,
                                         progress=full, itemize=bool(config.on_sync))
        if config.debug_commands:
            log.debug("running %r with %d paths on stdin: %r", argv, len(entries), entries[:50])
        # A full sync reports its progress (pirsyncd.replica.progress), in numbers the parser reads.
        result = yield Command(argv, rsync.encode_path_list(entries), mode.value,
                               env=(("LC_ALL", "C"),) if full or config.on_sync else ())
        paths = entries if paths is None else paths
        if mode == RunMode.CHANGES and rsync.is_broken_delete_missing_args(result.status, result.stderr_tail):
            self._switch_to_fallback = True
        verdict = rsync.explain(rsync.classify_exit_status(result.status, result.stderr_tail), config)
        if result.stopped_for:
            verdict = Verdict(Outcome.RETRY, f"rsync stopped ({result.stopped_for})")
        elif verdict.outcome in (Outcome.PARTIAL, Outcome.VANISHED) and not result.stderr_truncated:
            verdict = self._sort_out_errors(verdict, result, mode, paths, deleted or [])
        output = result.stdout.decode(errors="replace")
        self.on_run(RunRecord(mode, len(paths), result, verdict, rsync.parse_stats(output)))
        if verdict.outcome == Outcome.VANISHED:
            # Files vanished while rsync ran: their events are queued, but send the batch's
            # paths again too rather than trust that.
            self._vanished = True
        elif verdict.outcome != Outcome.OK:
            self._verdict = verdict
            return False
        return True

    def _sort_out_errors(self, verdict: Verdict, result: ChildResult, mode: RunMode, paths: list[str],
                         deleted: list[str]) -> Verdict:
        """Status 23/24 whose errors are all about source paths: the run did what it could.

        Paths that still exist are failing (retried on their own); paths gone from the source
        are not errors (their events are queued). Deletions rsync skipped because of an error
        on the sending side are sent again at once, or with the failing parent: removed paths,
        and directories the run sent whole (their lost entries were not deleted either).
        """
        source = self.config.source
        errors = rsync.analyse_errors(result.stderr, source, result.stdout.decode(errors="replace"))
        if errors.destination_trouble or not (errors.failed or errors.deletions_skipped):
            return verdict
        facts = SourceFacts(source)  # a path through a symlink is gone, not failing
        failing = {path: reason for path, reason in errors.failed.items()
                   if reason != "vanished" and facts.kind(path) is not None}
        if any(reason == "vanished" for reason in errors.failed.values()):
            # As for status 24: what vanished may have been renamed, and its new name must
            # not be renamed from a stale copy at the destination. Send the batch again.
            self._vanished = True
        if errors.deletions_skipped:
            if mode == RunMode.FULL:
                self._deletions_skipped_in_full = True
            else:
                if mode == RunMode.DELETIONS:
                    self._entries_again += [path for path in self._checking if _failing_ancestor(path, failing) is None]
                removed = deleted if mode == RunMode.DELETIONS else [
                    path for path in paths if facts.kind(path) is None]
                for path in removed:
                    parent = _failing_ancestor(path, failing)
                    if parent is None:
                        self._removed_again.append(path)
                    else:
                        failing.setdefault(path, failing[parent])
                if mode in (RunMode.CHANGES, RunMode.VERIFY):
                    # Listed directories go whole (-r, --delete): what they lost stayed too.
                    for path in paths:
                        if facts.kind(path) is not True:
                            continue
                        reason = failing.get(_failing_ancestor(path, failing) or "") or next(
                            (why for failed, why in failing.items() if failed.startswith(path + "/")), None)
                        if reason is None:
                            self._whole_again.append(path)
                        else:  # it would fail again: sent again with the failing path's backoff
                            failing.setdefault(path, reason)
        self._failed_paths.update(failing)
        if verdict.outcome == Outcome.VANISHED:
            return verdict
        return Verdict(Outcome.OK, f"{len(failing)} paths failing" if failing else "source paths gone")


def _failing_ancestor(path: str, failing: dict[str, str]) -> str | None:
    """The failing path at or above ``path``, if any."""
    components = path.split("/")
    for depth in range(len(components), 0, -1):
        candidate = "/".join(components[:depth])
        if candidate in failing:
            return candidate
    return "." if "." in failing else None


def _rename_at(root: str, move: Move) -> bool:
    """Rename root/old_path to root/new_path when that is exactly what the source did."""
    old, new = os.path.join(root, move.old_path), os.path.join(root, move.new_path)
    try:
        status = os.lstat(old)
        if stat.S_ISDIR(status.st_mode) != move.is_dir:
            return False
        if move.is_dir and os.path.lexists(new):
            return False
        if not move.is_dir and os.path.isdir(new) and not os.path.islink(new):
            return False
        if not os.path.isdir(os.path.dirname(new)):
            return False
        os.rename(old, new)
    except OSError:
        return False
    return True
