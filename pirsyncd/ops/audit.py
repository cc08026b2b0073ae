"""``pirsyncd audit``: prove that each destination is an exact mirror of the source, name what
is not, and repair it on request (issue 25). The argv and the reading of rsync's answer are
:mod:`pirsyncd.ops.drift`'s; this module runs them, one rsync at a time, outside the daemon.

    metadata pass (dry run of the live full sync, itemized)   [--content=K/N: checksums of a slice]
      ─> a daemon runs: sync barrier (as pirsyncd wait), then recheck only the drifted paths,
         and drop a path the source changed since the barrier: churn, not drift
      ─> --repair: delete the extra entries, send the others (each path itself), recheck them

Why a daemon's churn raises no alarm: a change made before the barrier is at the destination
when the barrier returns, so the recheck no longer sees it; a change made after it gives the
source entry (or for an extra entry, its nearest directory at the source) a ctime past the
barrier, which user space cannot set back, so it is left for the next audit. What a recheck
still sees on an entry the source did not touch since is drift. So while a daemon runs, rsync
may over-report (``--ignore-errors``: a directory that vanished under it does not make it skip
the deletions, its entries at the destination show as extra until the recheck); without a
daemon, a pass that lost its deletions that way is run again.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat
import time
from collections.abc import Callable, Iterator

from pirsyncd.config import exitcodes
from pirsyncd.config.parse import Config
from pirsyncd.edges.runner import Child, ChildResult
from pirsyncd.ops import drift as plan
from pirsyncd.ops.drift import AuditResult
from pirsyncd.ops.status import running_status, wait_until_synced
from pirsyncd.replica.rsync import Outcome, analyse_errors, classify_exit_status, encode_path_list, explain
from pirsyncd.source.identity import SourceProblem, inspect_source, wipe_refusal
from pirsyncd.source.mounts import MOUNTINFO, MountsBelow, parse_mountinfo

_STDOUT_LIMIT = 1 << 30  # every itemized line is kept: the drift is the answer
_CHURN_MARGIN = 0.1  # seconds: the kernel stamps ctimes from a clock a tick behind time.time()
_ATTEMPTS = 3  # passes tried when the source changed so much that rsync skipped its deletions


@dataclasses.dataclass(frozen=True)
class AuditRequest:
    """What the command line asked for. ``content``: "" (metadata), "all" or "K/N"."""

    content: str = ""
    repair: bool = False
    status_path: str | None = None  # the running daemon's status file, if one is named
    timeout: float = 600.0  # for the sync barrier


class AuditError(Exception):
    """An audit that could not be done: the message for a person and the exit status."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def kept_out_now(config: Config) -> list[str]:
    """The mount points below the source whose contents the live sync keeps out (as it would now)."""
    mounts = MountsBelow(config.source, config.one_file_system)
    mounts.root_device = os.stat(config.source).st_dev
    with open(MOUNTINFO, "rb") as table:
        mounts.note(parse_mountinfo(table.read().decode("latin-1")))
    return mounts.kept_out()


def _run(config: Config, argv: list[str], paths: list[str] | None, label: str) -> ChildResult:
    """Run one rsync to its end, ``LC_ALL=C`` (every non-ASCII byte of a name escaped, messages
    in English for :func:`analyse_errors`), its paths NUL-separated on stdin."""
    stdin = encode_path_list(paths) if paths is not None else b""
    child = Child(argv, stdin, label, env={**os.environ, "LC_ALL": "C"}, output_limit=_STDOUT_LIMIT)
    return child.wait(config.time_limit if config.time_limit > 0 else 10.0 ** 9)


def _dry_run(config: Config, argv: list[str], paths: Callable[[], list[str]] | None, label: str) -> dict[str, str]:
    """Drift as one dry run itemizes it; AuditError when rsync failed. A source that changed
    while rsync read it (status 24, or 23 for paths that vanished) is no failure, unless rsync
    skipped the deletions for it: then the pass is run again (``paths`` are asked for again)."""
    for _ in range(_ATTEMPTS):
        result = _run(config, argv, paths() if paths is not None else None, label)
        if result.status in (0, 24):
            return plan.parse_itemized(result.stdout)
        errors = analyse_errors(result.stderr, config.source, result.stdout.decode(errors="replace"))
        churn = result.status == 23 and errors.failed and not errors.destination_trouble and all(
            reason == "vanished" for reason in errors.failed.values())
        if churn and not errors.deletions_skipped:
            return plan.parse_itemized(result.stdout)
        if not churn:
            verdict = explain(classify_exit_status(result.status, result.stderr_tail), config)
            tail = _telling_line(result.stderr_tail)
            message = f"rsync exited with status {result.status} ({verdict.meaning})" + (
                f": {tail}" if tail and verdict.outcome != Outcome.FATAL else "") + (
                f"; {verdict.fix}" if verdict.fix else "")
            if result.status == 23 and errors.failed:
                path, reason = next(iter(errors.failed.items()))
                message = (f"rsync could not read {len(errors.failed)} source paths ({path}: {reason}); "
                           "make them readable to audit them")
            exit_status = verdict.exit_status if verdict.outcome == Outcome.FATAL else exitcodes.UNAVAILABLE
            raise AuditError(message, exit_status)
    raise AuditError("the source changed too much while it was audited; audit again", exitcodes.TEMPFAIL)


def _telling_line(stderr_tail: str) -> str:
    """The line of rsync's stderr that says what went wrong ("ssh: connect to host ...: Connection
    refused"), not its closing summary ("rsync error: ... (code 12)")."""
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith(("rsync error:", "rsync: connection unexpectedly"))]
    return (telling or lines or [""])[0]


def slice_files(config: Config, part: int, parts: int, kept_out: list[str]) -> Iterator[str]:
    """The regular files of the source in slice ``part`` of ``parts`` (:func:`drift.in_slice`),
    relative to it, not descending into kept-out mount points (or other file systems, with
    ``one_file_system``). rsync's own filters still decide what of them is compared."""
    root = config.source.rstrip("/") or "/"
    skipped = set(kept_out)
    device = os.stat(root).st_dev
    stack = [""]
    while stack:
        relative = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, relative) if relative else root))
        except OSError:
            continue  # gone or unreadable: the metadata pass says so
        for entry in entries:
            path = f"{relative}/{entry.name}" if relative else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if path not in skipped and not (config.one_file_system and entry.stat(
                            follow_symlinks=False).st_dev != device):
                        stack.append(path)
                elif entry.is_file(follow_symlinks=False) and plan.in_slice(path, part, parts):
                    yield path
            except OSError:
                continue


def _source_ctime(config: Config, path: str) -> float:
    """ctime of the source entry at ``path``, or of its nearest existing directory above."""
    while True:
        try:
            return os.lstat(os.path.join(config.source, path)).st_ctime
        except OSError:
            if path in ("", "."):
                return float("inf")  # the source itself is gone: nothing is settled
            path = os.path.dirname(path) or "."


def _is_source_directory(config: Config) -> Callable[[str], bool]:
    return functools.partial(is_source_directory, config.source)


def is_source_directory(source: str, path: str) -> bool:
    """Whether ``path`` (relative) is a directory at the source, not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(os.path.join(source, path)).st_mode)
    except OSError:
        return False


class DestinationAudit:
    """The audit of one destination (``config`` is one of ``Config.per_destination()``)."""

    def __init__(self, config: Config, request: AuditRequest, daemon: bool) -> None:
        """``daemon``: a daemon mirrors the source meanwhile; what is found is rechecked."""
        self.config = config
        self.request = request
        self.kept_out = kept_out_now(config)
        self.name = config.destination_name or config.destination.text
        self.extra_options = ["--ignore-errors"] if daemon else []

    def _options(self, argv: list[str]) -> list[str]:
        return [*argv[:-2], *self.extra_options, *argv[-2:]]

    def first_pass(self) -> dict[str, str]:
        """The whole tree (with checksums for ``--content``), and a content slice if asked for."""
        content = self.request.content
        argv = plan.build_audit_command(self.config, content=content == "all", kept_out=self.kept_out)
        found = _dry_run(self.config, self._options(argv), None, "audit")
        if content and content != "all":
            part, parts = plan.parse_slice(content)
            files = list(slice_files(self.config, part, parts, self.kept_out))
            if files:
                sliced = _dry_run(self.config, plan.build_slice_command(self.config, kept_out=self.kept_out),
                                  lambda: files, f"audit slice {content}")
                found = plan.with_slice(found, sliced)
        return found

    def recheck(self, found: dict[str, str], settled_before: float | None) -> dict[str, str]:
        """What of ``found`` is still different; with ``settled_before`` (epoch), paths the source
        changed since then are left out (churn, checked next time)."""
        if not found:
            return {}
        argv = plan.build_recheck_command(self.config, content=bool(self.request.content), kept_out=self.kept_out)
        is_directory = _is_source_directory(self.config)

        def entries() -> list[str]:
            return plan.listable_recheck_entries(found, is_directory)
        again = plan.confirmed(found, _dry_run(self.config, self._options(argv), entries, "audit recheck"))
        if settled_before is None:
            return again
        return {path: kind for path, kind in again.items()
                if _source_ctime(self.config, path) < settled_before - _CHURN_MARGIN}

    def repair(self, found: dict[str, str], print_error: Callable[[str], None]) -> dict[str, str]:
        """Delete the extra entries (unless there are more than ``max_delete``: then none, and
        say so), then send every other drifted path and the directories above them. Returns
        what to audit again: ``found`` and those directories."""
        config = self.config
        deletions, sends = plan.repair_plan(found, _is_source_directory(config))
        count = plan.counted_deletions(found)
        if deletions and 0 <= config.max_delete < count:
            print_error(f"pirsyncd audit: {self.name}: the repair would delete {count} entries, more than "
                        f"max_delete = {config.max_delete}: none deleted; check the source, then raise max_delete "
                        "or delete them by hand")
            deletions = []
        if deletions:
            if inspect_source(config.source) and not config.allow_empty_source:
                raise AuditError(str(wipe_refusal(config.source)), exitcodes.REFUSED_WIPE)
            self._send(plan.build_repair_delete_command(config, kept_out=self.kept_out), deletions, "repair deletions")
        if sends:
            self._send(plan.build_repair_send_command(config, kept_out=self.kept_out), sends, "repair")
        return {**{path: plan.ATTRIBUTES for path in sends}, **found}

    def _send(self, argv: list[str], paths: list[str], label: str) -> None:
        result = _run(self.config, argv, paths, label)
        errors = analyse_errors(result.stderr, self.config.source)
        churn = result.status == 23 and errors.failed and not errors.destination_trouble and all(
            reason == "vanished" for reason in errors.failed.values())  # the recheck tells what is left
        if result.status not in (0, 24) and not churn:
            verdict = explain(classify_exit_status(result.status, result.stderr_tail), self.config)
            raise AuditError(f"the {label} failed: rsync exited with status {result.status} ({verdict.meaning})"
                             + (f"; {verdict.fix}" if verdict.fix else ""),
                             verdict.exit_status if verdict.outcome == Outcome.FATAL else exitcodes.UNAVAILABLE)


def run_audit(config: Config, request: AuditRequest, only: str | None = None,
              print_error: Callable[[str], None] = print) -> tuple[list[AuditResult], int]:
    """Audit each destination (or the one named ``only``); return the results and the exit
    status: 0 identical, 1 drift, else the first error's (exitcodes)."""
    try:
        inspect_source(config.source)
    except SourceProblem as problem:
        raise AuditError(str(problem), problem.exit_status) from None
    destinations = [each for each in config.per_destination() if only in (None, each.destination_name)]
    if not destinations:
        names = ", ".join(each.destination_name for each in config.per_destination())
        raise AuditError(f"no destination {only!r} (known: {names})", exitcodes.USAGE)
    daemon = request.status_path is not None and running_status(request.status_path) is not None
    audits = [DestinationAudit(each, request, daemon) for each in destinations]
    started = time.monotonic()
    found: dict[str, dict[str, str]] = {}
    errors: dict[str, AuditError] = {}
    for audit in audits:
        try:
            found[audit.name] = audit.first_pass()
        except AuditError as error:
            errors[audit.name] = error
    if daemon and any(found.values()):
        found = _settle(audits, found, errors, request, only, print_error)
    repaired: dict[str, dict[str, str]] = {}
    if request.repair:
        for audit in audits:
            before = found.get(audit.name)
            if not before or audit.name in errors:
                continue
            try:
                settled_before = time.time()
                touched = audit.repair(before, print_error)
                repaired[audit.name] = before
                found[audit.name] = audit.recheck(touched, settled_before if daemon else None)
            except AuditError as error:
                errors[audit.name] = error
    seconds = time.monotonic() - started
    results = [AuditResult(audit.name, found.get(audit.name, {}), seconds, request.content,
                           repaired.get(audit.name) if request.repair else None,
                           str(errors[audit.name]) if audit.name in errors else "") for audit in audits]
    if errors:
        return results, next(iter(errors.values())).exit_status
    return results, exitcodes.OK if not any(result.drift for result in results) else exitcodes.UNHEALTHY


def _settle(audits: list[DestinationAudit], found: dict[str, dict[str, str]], errors: dict[str, AuditError],
            request: AuditRequest, only: str | None, print_error: Callable[[str], None]) -> dict[str, dict[str, str]]:
    """Let the daemon send what it has (a sync barrier), then keep only what a recheck confirms."""
    assert request.status_path is not None
    if (running_status(request.status_path) or {}).get("paused"):
        raise AuditError("the instance is paused, so changes on their way cannot be told from drift; resume it "
                         "(pirsyncd resume) and audit again", exitcodes.TEMPFAIL)
    settled_before = time.time()
    status = wait_until_synced(request.status_path, request.timeout, print_error=print_error, destination=only)
    if status != exitcodes.OK:
        raise AuditError("the daemon did not bring the mirror in sync, so drift cannot be told from "
                         "changes on their way; audit again later", status)
    settled: dict[str, dict[str, str]] = {}
    for audit in audits:
        if audit.name in errors:
            continue
        try:
            settled[audit.name] = audit.recheck(found.get(audit.name, {}), settled_before)
        except AuditError as error:
            errors[audit.name] = error
    return settled
