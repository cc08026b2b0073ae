"""Deletions in batches: what the parents path asks rsync to re-check, and that every deletion reaches
the mirror on both paths without rsync skipping any (no "IO error encountered", nothing retried).

The parents path logs, with ``--debug-commands``, each run as
``running ['rsync', ..., '-d', ...] with 1 paths on stdin: ['a/b/.']``; the tests read those lines.
"""

from __future__ import annotations

import ast
import os
import random
import re
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import rsyncs
from tests.support.daemon import Daemon
from tests.support.fakes import FAKE_RSYNC
from tests.support.trees import list_tree, wait_for, wait_until_equal, write_file
from tests.support.workload import HOSTILE_NAMES, Workload, seed_from_environment

COMMAND_LINE = re.compile(r"running (\[.*\]) with (\d+) paths on stdin: (\[.*\])$")



def started(daemon: Daemon, timeout: float = 60) -> Daemon:
    """``daemon.start()``, stopping the daemon if it never gets in sync: none outlives its test."""
    try:
        return daemon.start(timeout=timeout)
    except BaseException:
        daemon.stop()
        raise


def start(tmp_path: Path, source: Path, destination: Path) -> Daemon:
    return started(Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                          "--delay", "0.1", "--debug-commands"))


def needs_parents(deletion_path: rsyncs.DeletionPath | None) -> None:
    if deletion_path is None or deletion_path.name != rsyncs.PARENTS:
        pytest.skip("about the commands of the parents deletion path")


def commands(daemon: Daemon) -> list[tuple[list[str], list[str]]]:
    """(argv, stdin entries) of every rsync run logged so far."""
    found = []
    for line in daemon.log().splitlines():
        match = COMMAND_LINE.search(line)
        if match:
            argv, entries = ast.literal_eval(match[1]), ast.literal_eval(match[3])
            assert int(match[2]) == len(entries), line  # fewer than 50: the log shows them all
            found.append((argv, entries))
    return found


def is_deletions_run(argv: list[str]) -> bool:
    return "-d" in argv and "--delete" in argv and "--files-from=-" in argv


class Deletions:
    """The deletions runs a test's changes cause: those logged after ``mark()``."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.seen = 0

    def mark(self) -> None:
        self.daemon.wait_synced()
        self.seen = len(commands(self.daemon))

    def after_mark(self, source: Path, destination: Path) -> list[tuple[list[str], list[str]]]:
        """Wait until the mirror has caught up, then return the deletions runs since the mark."""
        wait_until_equal(source, destination, 30)
        self.daemon.wait_synced()
        runs = [(argv, entries) for argv, entries in commands(self.daemon)[self.seen:] if is_deletions_run(argv)]
        assert runs, f"no deletions run:\n{self.daemon.log()}"
        return runs


@contextmanager
def frozen(daemon: Daemon) -> Iterator[None]:
    """The daemon stopped while the block changes the tree: it reads every event as one batch."""
    daemon.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        daemon.signal(signal.SIGCONT)


def test_deleting_a_root_file_re_checks_only_the_root_one_level(
        tmp_path: Path, trees: tuple[Path, Path], deletion_path: rsyncs.DeletionPath | None) -> None:
    needs_parents(deletion_path)
    source, destination = trees
    write_file(source / "root-file", "goes\n")
    write_file(source / "kept", "stays\n")
    write_file(source / "sub" / "deep" / "file", "stays\n")
    with start(tmp_path, source, destination) as daemon:
        deletions = Deletions(daemon)
        deletions.mark()
        (source / "root-file").unlink()
        runs = deletions.after_mark(source, destination)
        assert [entries for _, entries in runs] == [["."]], runs
        for argv, _ in runs:
            assert "-r" not in argv and "--recursive" not in argv and "--delete-missing-args" not in argv, argv
        daemon.wait_log("deletions of 1 paths sent")


def test_a_deep_deletion_re_checks_only_its_parent(
        tmp_path: Path, trees: tuple[Path, Path], deletion_path: rsyncs.DeletionPath | None) -> None:
    needs_parents(deletion_path)
    source, destination = trees
    write_file(source / "a" / "b" / "gone", "goes\n")
    write_file(source / "a" / "b" / "kept", "stays\n")
    write_file(source / "a" / "sibling", "stays\n")
    # Directory names that read as options or comments, or span lines: each parent once, as it is.
    hostile = [name for name in HOSTILE_NAMES if name.startswith(("-", "#", ";", " ")) or "\n" in name]
    for name in hostile:
        write_file(source / name / "gone", "goes\n")
        write_file(source / name / "kept", "stays\n")
    with start(tmp_path, source, destination) as daemon:
        deletions = Deletions(daemon)
        deletions.mark()
        (source / "a" / "b" / "gone").unlink()
        assert [entries for _, entries in deletions.after_mark(source, destination)] == [["a/b/."]]
        deletions.mark()
        with frozen(daemon):
            for name in hostile:
                (source / name / "gone").unlink()
        runs = deletions.after_mark(source, destination)
        assert sorted(entry for _, entries in runs for entry in entries) == sorted(f"{name}/." for name in hostile)


def test_a_directory_deleted_with_its_parent_re_checks_the_nearest_ancestor_left(
        tmp_path: Path, trees: tuple[Path, Path], deletion_path: rsyncs.DeletionPath | None) -> None:
    needs_parents(deletion_path)
    source, destination = trees
    write_file(source / "x" / "y" / "z" / "f", "goes\n")
    write_file(source / "x" / "y" / "g", "goes\n")
    write_file(source / "x" / "kept", "stays\n")
    write_file(source / "top" / "only" / "child" / "f", "goes\n")
    with start(tmp_path, source, destination) as daemon:
        deletions = Deletions(daemon)
        deletions.mark()
        with frozen(daemon):  # one batch: the changed file below, then its directories
            write_file(source / "x" / "y" / "z" / "f", "changed, then deleted\n")
            shutil.rmtree(source / "x" / "y" / "z")
            shutil.rmtree(source / "x" / "y")
        assert [entries for _, entries in deletions.after_mark(source, destination)] == [["x/."]]
        deletions.mark()
        with frozen(daemon):
            (source / "top" / "only" / "child" / "f").unlink()
            shutil.rmtree(source / "top")  # every ancestor up to the root
        assert [entries for _, entries in deletions.after_mark(source, destination)] == [["."]]


def gated_rsync(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """The environment that makes :data:`FAKE_RSYNC` hold batch transfers while ``gate`` exists, having
    made ``blocked``: a job's later runs (the deletions run) then start on a tree changed meanwhile."""
    gate, blocked = tmp_path / "gate", tmp_path / "blocked"
    return {"FAKE_RSYNC_BATCH": "gate", "FAKE_RSYNC_GATE": str(gate), "FAKE_RSYNC_BATCH_STARTED": str(blocked)}, \
        gate, blocked


def test_deletions_pending_while_their_parents_go_or_become_a_file(
        tmp_path: Path, trees: tuple[Path, Path], deletion_path: rsyncs.DeletionPath | None) -> None:
    """A deletion planned while its parents existed; by the time its run starts they are gone, or
    the directory is a file of the same name. On both paths: it converges, nothing is retried and rsync
    skips no deletion; on the parents path the run re-checks the nearest directory left ('x/.', '.')."""
    source, destination = trees
    write_file(source / "x" / "y" / "z" / "f", "goes\n")
    write_file(source / "x" / "kept", "stays\n")
    write_file(source / "d" / "sub" / "f", "goes\n")
    write_file(source / "k", "changed in each job, so a transfer runs before the deletions\n")
    gated, gate, blocked = gated_rsync(tmp_path)
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1", "--debug-commands", "--rsync-binary", str(FAKE_RSYNC),
                    env=gated)

    def remove_both_parents() -> None:
        shutil.rmtree(source / "x" / "y")

    def replace_the_directory_by_a_file() -> None:
        shutil.rmtree(source / "d")
        write_file(source / "d", "a file now\n")

    with started(daemon):
        deletions = Deletions(daemon)
        for deep_file, change_the_parents, expected in (("x/y/z/f", remove_both_parents, ["x/."]),
                                                        ("d/sub/f", replace_the_directory_by_a_file, ["."])):
            deletions.mark()
            gate.touch()
            with frozen(daemon):
                write_file(source / "k", f"before {deep_file} goes\n")
                (source / deep_file).unlink()
            wait_for(blocked.exists, 30, lambda: f"the transfer never ran:\n{daemon.log()}")
            change_the_parents()
            gate.unlink()
            if deletion_path is not None and deletion_path.name == rsyncs.PARENTS:
                runs = deletions.after_mark(source, destination)
                assert runs[0][1] == expected, runs  # then the parents' own deletion, in the next batch
            else:
                wait_until_equal(source, destination, 30)
                daemon.wait_synced()
        log = daemon.log()
        assert "IO error encountered" not in log and "retry in" not in log, log


def delete_some(root: Path, seed: int) -> list[str]:
    """Delete about one entry in six, chosen by ``seed``; return what was deleted."""
    chooser = random.Random(seed)
    deleted = []
    for path in reversed(list_tree(root).entries):  # deepest first: a directory after its entries
        if chooser.random() < 1 / 6 and os.path.lexists(root / path):
            target = root / path
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
            deleted.append(path)
    return deleted


def hash_of(path: str, seed: int) -> float:
    """A number in [0, 1) fixed by the path and the seed (the same on every run)."""
    return random.Random(f"{seed}:{path}").random()


@pytest.mark.parametrize("default_seed", [5005, 8008])
def test_a_burst_of_renames_and_deletions_converges_and_settles(tmp_path: Path, default_seed: int) -> None:
    """Renames and moves (the workload, in churn/) and deletions below the root of directories the
    mirror already has (kept*/, which the workload does not touch), in one burst."""
    seed = seed_from_environment(default_seed)
    source, destination, outside = tmp_path / "source", tmp_path / "destination", tmp_path / "outside"
    for directory in (source, destination, outside, source / "churn"):
        directory.mkdir()
    for index in range(36):
        write_file(source / f"kept{index % 3}" / f"sub{index % 4}" / f"deeper{index % 2}" / f"file{index}",
                   f"{index}\n")
    workload = Workload(source / "churn", seed, "renames", outside)
    workload.run(150)  # mirrored by the initial sync
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.05")
    with started(daemon, timeout=120):
        deleted = [path for path in list_tree(source).files if path.startswith("kept") and hash_of(path, seed) < 0.4]
        for path in deleted:
            (source / path).unlink()
        shutil.rmtree(source / "kept1" / "sub2")
        workload.run(150)
        deleted += delete_some(source / "churn", seed)
        workload.run(50)
        try:
            wait_until_equal(source, destination, 120)
            daemon.wait_synced(60)
        except AssertionError as error:
            raise AssertionError(f"{workload.report()}\ndeleted: {deleted[:40]}\n{error}\n"
                                 f"--- daemon log:\n{daemon.log()[-6000:]}") from None
        log = daemon.log()
        assert "retry in" not in log and "IO error encountered" not in log, f"{workload.describe()}\n{log}"
        wait_for(lambda: daemon.status().get("state") == "in-sync", 30, lambda: f"not settled: {daemon.status()}")
        assert daemon.alive()



def test_deletions_inside_a_directory_sent_whole_are_not_lost_to_an_error_in_the_same_run(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """Soak seed 10406 (mixed, delay 0): a directory sent whole (recreated, so its old entries must
    go) shares a run with a path whose parent became a file just before the run started. rsync's
    link_stat fails (Not a directory), it says 'IO error encountered -- skipping file deletion'
    and deletes nothing, also inside the directory sent whole. Only the run's vanished paths were
    sent again, so the directory's old entries stayed at the destination for good, in sync."""
    source, destination = trees
    write_file(source / "d" / "old", "goes with the old directory\n")
    write_file(source / "x" / "inner" / "f", "x/inner/f\n")
    gated, gate, blocked = gated_rsync(tmp_path)
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0", "--rsync-binary", str(FAKE_RSYNC), env=gated)
    with started(daemon):
        gate.touch()
        with frozen(daemon):
            shutil.rmtree(source / "d")
            write_file(source / "d" / "new", "the new directory's only file\n")
            write_file(source / "x" / "inner" / "f", "changed, so x/inner/f is in the run\n")
        wait_for(blocked.exists, 30, lambda: f"the transfer never ran:\n{daemon.log()}")
        shutil.rmtree(source / "x")
        write_file(source / "x", "a file now\n")
        gate.unlink()
        daemon.assert_in_sync(source, destination)
        assert "IO error encountered" in daemon.log(), "the run this is about did not happen"
