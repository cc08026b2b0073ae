"""Periodic audits by the daemon (``audit_interval``, ``audit_content``, ``audit_repair``): the
passes of ``pirsyncd audit`` (:mod:`pirsyncd.ops.drift`), run for one destination at a time as
children the loop services like any rsync run.

    the audit is due and the destination runs no job ─> the dry run of the whole tree (a child);
      that destination's next batch waits for each child (never both at once; the others go on)
    audit_content_slices = N ─> then the source's listing (rsync --list-only, a child; the files
      of slice K picked a chunk at a time as its output arrives) ─> the checksum pass of those
      files (a child, the list on stdin); K turns 1..N, one slice an audit, from 1 at each start
    drift found ─> wait until the destination has every change read by then (its synced_seq),
      then recheck only the drifted paths (a child) and drop those the source changed since (ctime)
      ─> the status file, STATUS=, the journal (PIRSYNCD_AUDIT_DRIFT), the metrics, on_failure (drift)
      ─> audit_repair: the drifted paths become pending changes, sent by the next batch

As with the command, a change on its way is not drift: by the recheck it is at the destination,
and one made after the first pass gives the source entry (or, for an extra entry, its nearest
directory at the source) a newer ctime. The slice's files come from a child, not from a walk
of the source by the daemon, which would block the loop.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from typing import Any

from pirsyncd.config.parse import Config
from pirsyncd.edges.runner import Child, ChildResult
from pirsyncd.ops import drift as plan
from pirsyncd.ops.audit import is_source_directory
from pirsyncd.replica.rsync import analyse_errors, classify_exit_status, encode_path_list
from pirsyncd.source.events import Change, ChangeKind

log = logging.getLogger("pirsyncd")

_CHURN_MARGIN = 1.0  # seconds before the first pass ended a source change counts as churn
_OUTPUT_LIMIT = 1 << 28
_SHOWN = 5
FIRST, LISTING, SLICE, SETTLING, RECHECK = "first", "listing", "slice", "settling", "recheck"


def build_periodic_audit_command(config: Config, kept_out: list[str]) -> list[str]:
    """The dry run of a periodic audit: the command's metadata pass (with checksums when
    ``audit_content`` is not in slices), reading the source with ``--ignore-errors`` (the source
    may change)."""
    content = config.audit_content and not sliced(config)
    return _ignoring_errors(plan.build_audit_command(config, content=content, kept_out=kept_out))


def sliced(config: Config) -> bool:
    """Whether each periodic audit checksums one slice of the content (not all of it)."""
    return config.audit_content and config.audit_content_slices > 1


def _ignoring_errors(argv: list[str]) -> list[str]:
    return [*argv[:-2], "--ignore-errors", *argv[-2:]]


def source_ctime(source: str, path: str) -> float:
    """ctime of the source entry at ``path``, or of its nearest existing directory above."""
    while True:
        try:
            return os.lstat(os.path.join(source, path)).st_ctime
        except OSError:
            if path in ("", "."):
                return float("inf")
            path = os.path.dirname(path) or "."


def repair_changes(found: dict[str, str], is_directory: Any) -> list[Change]:
    """The pending changes that send drifted paths again: extra ones as removed (the top-most
    only), directories whole, files as changed (compared byte for byte)."""
    changes = []
    extras = {path for path, kind in found.items() if kind == plan.EXTRA}
    for path, kind in sorted(found.items()):
        if path == ".":
            changes.append(Change(ChangeKind.CHANGED, ".", True))
        elif kind == plan.EXTRA:
            parents = path.split("/")[:-1]
            if not any("/".join(parents[:depth]) in extras for depth in range(1, len(parents) + 1)):
                changes.append(Change(ChangeKind.REMOVED, path, any(other.startswith(path + "/") for other in extras)))
        elif is_directory(path):
            changes.append(Change(ChangeKind.NEW_DIR if kind == plan.MISSING else ChangeKind.CHANGED, path, True))
        else:
            changes.append(Change(ChangeKind.CHANGED, path))
    return changes


@dataclasses.dataclass
class _Audit:
    """One destination's periodic audit: when the next is due, where the running one is, the last result."""

    next_at: float
    phase: str = ""  # "", FIRST, LISTING, SLICE (children, started when due), SETTLING (waiting for the sync), RECHECK
    child: Child | None = None
    found: dict[str, str] = dataclasses.field(default_factory=dict)  # the first pass's drift
    slice: int = 0  # the content slice this audit checks (audit_content_slices), 0: none
    last_slice: int = 0  # the slice the last audit that ended checked
    listing: plan.SliceListing | None = None  # the files of the slice, while the listing runs and after
    target_seq: int = 0  # the change sequence number the destination must reach before the recheck
    settled_wall: float = 0.0  # when the first pass ended (epoch)
    last: dict[str, Any] | None = None
    drift: dict[str, str] = dataclasses.field(default_factory=dict)


class PeriodicAudits:
    """The periodic audits of an instance's destinations, by destination name. The instance
    asks :meth:`due_at` for the loop's table and calls :meth:`step` when it is due and
    :meth:`finished` when a child of it ends."""

    def __init__(self) -> None:
        self.audits: dict[str, _Audit] = {}

    def configure(self, configs: list[tuple[str, Config]], now: float) -> None:
        """At start and on a reload: which destinations are audited, the first one interval from now."""
        wanted = {name: config for name, config in configs if config.audit_interval > 0}
        for name in list(self.audits):
            if name not in wanted:
                child = self.audits.pop(name).child
                if child is not None:
                    child.stop("no longer audited")  # the loop still reaps it: finished() ignores it
        for name, config in wanted.items():
            audit = self.audits.setdefault(name, _Audit(now + config.audit_interval))
            audit.next_at = min(audit.next_at, now + config.audit_interval)

    def running(self, name: str) -> bool:
        """A child of this destination's audit that reads it runs: its sync waits (not for the
        source's listing, which does not read the destination)."""
        audit = self.audits.get(name)
        return audit is not None and audit.child is not None and audit.phase != LISTING

    def has_child(self, name: str) -> bool:
        """A child of this destination's audit runs (any of them)."""
        audit = self.audits.get(name)
        return audit is not None and audit.child is not None

    def due_at(self, name: str, synced_seq: int, settled: bool) -> float | None:
        """When this destination's audit has its next step (None: not audited, or a child runs).
        ``settled``: nothing is pending or running for it; ``synced_seq``: what it has."""
        audit = self.audits.get(name)
        if audit is None or audit.child is not None:
            return None
        if audit.phase == SETTLING:
            return float("-inf") if settled or synced_seq >= audit.target_seq else None
        if audit.phase in (LISTING, SLICE):
            return float("-inf")  # the next child of a running audit
        return audit.next_at

    def step(self, name: str, config: Config, kept_out: list[str]) -> Child:
        """Start the audit's next child: the first pass, the slice's listing and its checksum
        pass, or the recheck once the destination settled."""
        audit = self.audits[name]
        environment = {**os.environ, "LC_ALL": "C"}
        if audit.phase == SETTLING:
            audit.phase = RECHECK
            argv = plan.build_recheck_command(config, content=config.audit_content, kept_out=kept_out)
            entries = plan.listable_recheck_entries(audit.found, functools.partial(is_source_directory, config.source))
            audit.child = Child(_ignoring_errors(argv), encode_path_list(entries),
                                "audit recheck", env=environment, output_limit=_OUTPUT_LIMIT)
        elif audit.phase == LISTING:
            audit.slice = plan.next_slice(audit.last_slice, config.audit_content_slices)
            audit.listing = plan.SliceListing(audit.slice, config.audit_content_slices)
            audit.child = Child(plan.build_listing_command(config, kept_out=kept_out), b"",
                                f"audit listing {self._slice_text(audit, config)}", env=environment)
            audit.child.stdout_sink = audit.listing.feed
        elif audit.phase == SLICE:
            assert audit.listing is not None
            argv = plan.build_slice_command(config, kept_out=kept_out)
            audit.child = Child(_ignoring_errors(argv), bytes(audit.listing.stdin),
                                f"audit slice {self._slice_text(audit, config)}", env=environment,
                                output_limit=_OUTPUT_LIMIT)
            audit.listing = None
        else:
            audit.phase, audit.slice = FIRST, 0
            audit.child = Child(build_periodic_audit_command(config, kept_out), b"", "audit", env=environment,
                                output_limit=_OUTPUT_LIMIT)
        return audit.child

    def finished(self, name: str, config: Config, result: ChildResult, now: float, change_seq: int
                 ) -> dict[str, str] | None:
        """Take the end of an audit's child. Returns the confirmed drift when the audit is over
        ({}: identical), None while it goes on or when it failed."""
        audit = self.audits.get(name)
        if audit is None:
            return None
        audit.child = None
        fields = {"PIRSYNCD_INSTANCE": config.instance or "-", "PIRSYNCD_DESTINATION": name}
        prefix = f"{name}: " if config.destinations else ""
        errors = analyse_errors(result.stderr, config.source)
        churn = result.status == 23 and not errors.destination_trouble
        if result.stopped_for or (result.status not in (0, 24) and not churn):
            verdict = classify_exit_status(result.status, result.stderr_tail)
            reason = result.stopped_for or f"rsync exited with status {result.status} ({verdict.meaning})"
            if audit.phase == LISTING:
                reason = f"the listing of the source for content slice {self._slice_text(audit, config)}: {reason}"
            log.error("%saudit failed: %s; the next in %g s", prefix, reason, config.audit_interval, extra=fields)
            self._done(audit, config, now)
            audit.last = {"time": time.time(), "seconds": round(result.seconds, 3), "error": reason,
                          "slice": self._slice_text(audit, config) or None, "drift": None, "paths": []}
            return None
        itemized = plan.parse_itemized(result.stdout)
        if audit.phase == FIRST and sliced(config):
            audit.phase, audit.found = LISTING, itemized
            return None
        if audit.phase == LISTING and audit.listing is not None:
            log.debug("%saudit: %d files in content slice %s", prefix, audit.listing.count,
                      self._slice_text(audit, config))
            if audit.listing.count:
                audit.phase = SLICE  # the slice's checksum pass comes next
                return None
        if audit.phase != RECHECK:  # the passes are over: recheck what they found
            found = plan.with_slice(audit.found, itemized) if audit.phase != FIRST else itemized
            if found:
                audit.phase, audit.found = SETTLING, found
                audit.target_seq, audit.settled_wall = change_seq, time.time()
                return None
        settled_before = audit.settled_wall - _CHURN_MARGIN
        found = {path: kind for path, kind in plan.confirmed(audit.found, itemized).items()
                 if source_ctime(config.source, path) < settled_before} if audit.phase == RECHECK else {}
        self._done(audit, config, now)
        audit.drift, audit.last_slice = found, audit.slice
        counts = {kind: sum(each == kind for each in found.values()) for kind in plan.KINDS}
        audit.last = {"time": time.time(), "seconds": round(result.seconds, 3), "error": None,
                      "content": config.audit_content, "slice": self._slice_text(audit, config) or None,
                      "drift": counts,
                      "paths": [[path, kind] for path, kind in sorted(found.items())[:20]]}
        fields["PIRSYNCD_AUDIT_DRIFT"] = str(len(found))
        checked = f" of content slice {audit.last['slice']}" if audit.last["slice"] else ""
        if found:
            summary = ", ".join(f"{count} {kind}" for kind, count in counts.items() if count)
            first = ", ".join(f"{path!r} ({kind})" for path, kind in sorted(found.items())[:_SHOWN])
            log.warning("%saudit%s: %s at the destination (%s): %s%s", prefix, checked,
                        plan.count_of(len(found), "difference"), summary, first,
                        "; sent again" if config.audit_repair else "", extra=fields)
        else:
            log.info("%saudit%s: the destination is identical", prefix, checked, extra=fields)
        return found

    @staticmethod
    def _done(audit: _Audit, config: Config, now: float) -> None:
        audit.phase, audit.found, audit.listing = "", {}, None
        audit.next_at = now + config.audit_interval

    @staticmethod
    def _slice_text(audit: _Audit, config: Config) -> str:
        """'3/7': the content slice the audit checks ('' when it checks no slice)."""
        return f"{audit.slice}/{config.audit_content_slices}" if sliced(config) and audit.slice else ""

    def drift_count(self, name: str) -> int:
        audit = self.audits.get(name)
        return len(audit.drift) if audit is not None else 0

    def snapshot(self, name: str, wall_offset: float) -> dict[str, Any] | None:
        """The status file's ``audit`` of one destination (docs/CONTRACT.md), or None when not audited."""
        audit = self.audits.get(name)
        if audit is None:
            return None
        return {**(audit.last or {"time": None, "drift": None, "error": None, "paths": []}),
                "running": bool(audit.phase), "next": round(audit.next_at + wall_offset, 1)}

    def stop_all(self) -> None:
        """At shutdown: stop the running children, waiting for each a little."""
        for audit in self.audits.values():
            if audit.child is not None:
                audit.child.stop("shutting down")
                audit.child.wait(5.0)
                audit.child = None
