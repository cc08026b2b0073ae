"""A sync job: one Batch turned into at most two rsync runs, plus renames replayed at
a local destination so a moved file or directory is not sent again.

    renames at the destination ─> CHANGES run (changed files, deletions, new directories,
                                   byte for byte) ─> VERIFY run (renamed paths and
                                   directories whose metadata changed, quick check)
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterable

from pirsyncd import rsync
from pirsyncd.config import Config
from pirsyncd.destination import LOCAL, SSH
from pirsyncd.hardlinks import HardLinkIndex
from pirsyncd.pending import Batch
from pirsyncd.runner import RsyncRun
from pirsyncd.statusreport import StatusReport

log = logging.getLogger("pirsyncd")

RENAME = "rename"  # renames replayed over the ssh connection before the transfer


def probe_delete_missing_args(rsync_binary: str) -> bool:
    """True when this rsync deletes missing --files-from entries correctly (some builds
    fail with 'invalid file mode 00'); decided by a tiny local transfer."""
    with tempfile.TemporaryDirectory(prefix="pirsyncd-probe-") as scratch:
        source, target = os.path.join(scratch, "src"), os.path.join(scratch, "dst")
        os.mkdir(source)
        os.makedirs(os.path.join(target, "ghost-dir"))
        with open(os.path.join(source, "present"), "w"):
            pass
        with open(os.path.join(target, "ghost"), "w"):
            pass
        try:
            result = subprocess.run(
                [rsync_binary, "-a", "--files-from=-", "--from0", "--delete-missing-args", "--force",
                 source + "/", target + "/"],
                input=b"present\0ghost\0ghost-dir\0", capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return (result.returncode == 0 and not os.path.lexists(os.path.join(target, "ghost"))
                and not os.path.lexists(os.path.join(target, "ghost-dir")))


class SyncJob:
    """Runs one batch; ``start_next_run`` returns the next RsyncRun or None when done."""

    def __init__(self, config: Config, batch: Batch, delete_missing_args: bool, report: StatusReport,
                 control_path: str | None = None, hard_links: HardLinkIndex | None = None,
                 changed_inodes: set[tuple[int, int]] | None = None) -> None:
        self.config = config
        self.batch = batch
        self.report = report
        self.control_path = control_path
        self.hard_links = hard_links
        self.changed_inodes = changed_inodes or set()
        self.delete_missing_args = delete_missing_args
        self.run: RsyncRun | None = None
        self.run_mode = ""
        self.run_paths: list[str] = []
        self.switch_to_fallback = False
        self.renamed_away: set[str] = set()  # old names already renamed at the destination
        self.vanished = False
        self.failed_paths: dict[str, str] = {}  # existing source paths rsync could not send, with why
        self.redo: list[str] = []  # removed paths whose deletion rsync skipped: send again at once
        self.deletions_skipped_in_full = False
        self.fresh_dirs: list[str] = []
        self.deleted_paths: list[str] = []
        self.runs: list[tuple[str, list[str]]] = self._plan()

    def _plan(self) -> list[tuple[str, list[str]]]:
        batch = self.batch
        if batch.full:
            return [(rsync.FULL, [])]
        changed = list(batch.changed)
        if self.hard_links is not None:
            # A write through one name of a hard-linked file changes its other names too.
            changed += self.hard_links.other_names(changed, self.changed_inodes)
        fresh = list(batch.fresh_dirs)
        verify: list[str] = []
        renamed = self._replay_moves(changed, fresh)
        verify += [path for path in batch.moved_paths if path in renamed]
        fresh += [path for path in batch.moved_paths if path not in renamed]
        changed = self._without_renamed_away(changed)
        deleted: list[str] = []
        if self.delete_missing_args:
            changed, fresh = _without_missing_parents(self.config.source, changed, fresh)
        else:
            # Paths gone from the source are deleted by re-checking their parents' own entries.
            changed, fresh, deleted = _split_deleted(self.config.source, changed, fresh)
        runs: list[tuple[str, list[str]]] = []
        if self.config.destination.kind == SSH and batch.moves:
            runs.append((RENAME, [path for move in batch.moves for path in (move.old_path, move.new_path)]))
        if changed or fresh:
            runs.append((rsync.CHANGES, list(dict.fromkeys(changed + fresh))))
        if verify:
            runs.append((rsync.VERIFY, sorted(set(verify))))
        if deleted:
            runs.append((rsync.DELETIONS, deleted))
        if batch.directories:
            runs.append((rsync.DIRECTORIES, batch.directories))
        self.fresh_dirs = fresh
        return runs

    def _replay_moves(self, changed: list[str], fresh: list[str]) -> set[str]:
        """Rename at the destination what was renamed at the source; return the new paths
        renamed (to be verified with the quick check). A local rename that cannot be
        replayed exactly is sent instead; over ssh the renames run remotely first (the
        RENAME run) and the quick check afterwards sends whatever did not work out."""
        renamed: set[str] = set()
        destination = self.config.destination
        for move in self.batch.moves:
            done = destination.kind == SSH
            if destination.kind == LOCAL:
                done = _rename_at(destination.path, move.old_path, move.new_path, move.is_dir)
            if done:
                renamed.add(move.new_path)
                renamed.discard(move.old_path)
                if destination.kind == LOCAL:
                    self.renamed_away.add(move.old_path)
            else:
                renamed.discard(move.new_path)
                (fresh if move.is_dir else changed).append(move.new_path)
        return renamed

    def _without_renamed_away(self, paths: list[str]) -> list[str]:
        """Old names renamed at the destination need no deletion run (unless reused since)."""
        if not self.renamed_away:
            return paths
        source = self.config.source
        return [path for path in paths
                if path not in self.renamed_away or os.path.lexists(os.path.join(source, path))]

    def start_next_run(self) -> RsyncRun | None:
        if not self.runs:
            self.run = None
            return None
        self.run_mode, self.run_paths = self.runs.pop(0)
        control = self.control_path if self.config.destination.kind == SSH else None
        if self.run_mode == RENAME:
            argv = rsync.build_remote_rename_command(self.config, control)
            root = self.config.destination.path.rstrip("/") or "/"
            stdin = rsync.encode_path_list([f"{root}/{path}" for path in self.run_paths], escape_comments=False)
            self.run = RsyncRun(argv, stdin, self.run_mode)
            return self.run
        argv = rsync.build_rsync_command(self.config, self.run_mode, control_path=control,
                                         delete_missing_args=self.delete_missing_args)
        entries = self.run_paths
        if self.run_mode == rsync.DELETIONS:
            # Decided now, not when planned: the tree may have changed since.
            self.deleted_paths = self._without_renamed_away(self.run_paths)
            if not self.deleted_paths:
                return self.start_next_run()
            self.run_paths = deletion_parents(self.config.source, self.deleted_paths, self.fresh_dirs)
            if not self.run_paths:
                return self.start_next_run()
            entries = rsync.deletion_entries(self.run_paths)
        if self.config.debug_commands:
            log.debug("running %r with %d paths on stdin: %r", argv, len(entries), entries[:50])
        self.run = RsyncRun(argv, rsync.encode_path_list(entries), self.run_mode)
        return self.run

    def finish_run(self) -> rsync.Verdict:
        assert self.run is not None
        run = self.run
        status = run.finish()
        stderr_tail = run.stderr_tail()
        if self.run_mode == RENAME:
            # Whatever did not get renamed is sent by the quick check that follows.
            if status != 0:
                log.debug("remote renames exited %d (%s); the quick check sends the rest", status, stderr_tail)
            else:
                # Every old name is gone at the destination: drop runs that would only delete it.
                self.renamed_away.update(move.old_path for move in self.batch.moves)
                self.runs = [(mode, self._without_renamed_away(paths) if mode == rsync.CHANGES else paths)
                             for mode, paths in self.runs]
                self.runs = [(mode, paths) for mode, paths in self.runs if paths]
            self.run = None
            return rsync.Verdict(rsync.OK, "renamed at the destination")
        output = run.stdout_text.decode(errors="replace")
        if self.run_mode == rsync.CHANGES and rsync.is_broken_delete_missing_args(status, stderr_tail):
            self.switch_to_fallback = True
        verdict = rsync.explain(rsync.classify_exit_status(status, stderr_tail), self.config)
        if run.killed_for:
            verdict = rsync.Verdict(rsync.RETRY, f"rsync stopped ({run.killed_for})")
        elif verdict.outcome in (rsync.PARTIAL, rsync.VANISHED) and not run.stderr_truncated:
            verdict = self._sort_out_errors(verdict, run.stderr_whole())
        self.report.run_finished(self.run_mode, len(self.run_paths), run.elapsed(), status, verdict,
                                 rsync.parse_stats(output), stderr_tail, output)
        self.run = None
        return verdict

    def _sort_out_errors(self, verdict: rsync.Verdict, stderr: str) -> rsync.Verdict:
        """Status 23/24 whose errors are all about source paths: the run did what it could.

        Paths that still exist are failing (retried on their own); paths gone from the source
        are not errors (their events are queued). Deletions rsync skipped because of an error
        on the sending side are sent again at once, or with the failing parent.
        """
        source = self.config.source
        errors = rsync.analyse_errors(stderr, source)
        if errors.destination_trouble or not (errors.failed or errors.deletions_skipped):
            return verdict
        failing = {path: reason for path, reason in errors.failed.items()
                   if reason != "vanished" and os.path.lexists(os.path.join(source, path))}
        if errors.deletions_skipped:
            if self.run_mode == rsync.FULL:
                self.deletions_skipped_in_full = True
            else:
                removed = self.deleted_paths if self.run_mode == rsync.DELETIONS else [
                    path for path in self.run_paths if not os.path.lexists(os.path.join(source, path))]
                for path in removed:
                    parent = _failing_ancestor(path, failing)
                    if parent is None:
                        self.redo.append(path)
                    else:
                        failing.setdefault(path, failing[parent])
        self.failed_paths.update(failing)
        if verdict.outcome == rsync.VANISHED:
            return verdict
        return rsync.Verdict(rsync.OK, f"{len(failing)} paths failing" if failing else "source paths gone")


def _failing_ancestor(path: str, failing: dict[str, str]) -> str | None:
    """The failing path at or above ``path``, if any."""
    components = path.split("/")
    for depth in range(len(components), 0, -1):
        candidate = "/".join(components[:depth])
        if candidate in failing:
            return candidate
    return "." if "." in failing else None


def _split_deleted(source: str, changed: list[str], fresh: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Separate paths gone from the source (deleted, or under something no longer a
    directory) from those to send."""
    deleted: list[str] = []
    kept: tuple[list[str], list[str]] = ([], [])
    for paths, target in ((changed, kept[0]), (fresh, kept[1])):
        for path in paths:
            (target if os.path.lexists(os.path.join(source, path)) else deleted).append(path)
    return kept[0], kept[1], deleted


def deletion_parents(source: str, deleted: list[str], fresh_dirs: Iterable[str] = ()) -> list[str]:
    """The nearest existing directory above each deleted path, once each, sorted; none
    that lies in a new directory sent whole (that run deletes there already).

    A directory is one by lstat (a symlink to a directory is not), so rsync is never
    given a path that cannot be listed: that would make it skip every deletion.
    """
    known: dict[str, bool] = {"": True}

    def is_directory(relative: str) -> bool:
        answer = known.get(relative)
        if answer is None:
            try:
                answer = stat.S_ISDIR(os.lstat(os.path.join(source, relative)).st_mode)
            except OSError:
                answer = False
            known[relative] = answer
        return answer

    fresh = set(fresh_dirs)
    parents: set[str] = set()
    for path in deleted:
        parent = os.path.dirname(path)
        while parent and not is_directory(parent):
            parent = os.path.dirname(parent)
        components = parent.split("/") if parent else []
        if any("/".join(components[:depth]) in fresh for depth in range(1, len(components) + 1)):
            continue
        parents.add(parent or ".")
    return sorted(parents)


def _without_missing_parents(source: str, changed: list[str], fresh: list[str]) -> tuple[list[str], list[str]]:
    """Replace paths whose parent directory is gone from the source by their topmost
    missing ancestor: rsync reports a missing implied directory as 'vanished' (24)
    instead of deleting it, while the ancestor itself is deleted as a missing argument."""
    is_directory: dict[str, bool] = {"": True, ".": True}

    def directory(relative: str) -> bool:
        known = is_directory.get(relative)
        if known is None:
            try:
                known = stat.S_ISDIR(os.lstat(os.path.join(source, relative)).st_mode)
            except OSError:
                known = False
            is_directory[relative] = known
        return known

    def fix(path: str) -> tuple[str, bool]:
        parent = os.path.dirname(path)
        if directory(parent):
            return path, False
        components = path.split("/")
        for depth in range(1, len(components)):
            if not directory("/".join(components[:depth])):
                return "/".join(components[:depth]), True
        return path, False

    fixed_changed: list[str] = []
    fixed_fresh: list[str] = []
    for paths, target in ((changed, fixed_changed), (fresh, fixed_fresh)):
        for path in paths:
            replacement, moved_up = fix(path)
            (fixed_changed if moved_up else target).append(replacement)
    return fixed_changed, fixed_fresh


def _rename_at(root: str, old_path: str, new_path: str, is_dir: bool) -> bool:
    """Rename root/old_path to root/new_path when that is exactly what the source did."""
    old, new = os.path.join(root, old_path), os.path.join(root, new_path)
    try:
        status = os.lstat(old)
        if stat.S_ISDIR(status.st_mode) != is_dir:
            return False
        if is_dir and os.path.lexists(new):
            return False
        if not is_dir and os.path.isdir(new) and not os.path.islink(new):
            return False
        if not os.path.isdir(os.path.dirname(new)):
            return False
        os.rename(old, new)
    except OSError:
        return False
    return True


def close_shared_connection(config: Config, control_path: str) -> None:
    """Tell the ssh master to exit, so no ssh process outlives the daemon."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(rsync.build_close_connection_command(config, control_path), capture_output=True,
                       timeout=10, check=False)
