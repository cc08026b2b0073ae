"""Failing source paths, the parents deletion path and the source identity, with plain values.

The rsync error lines below are copied from Debian 12's rsync 3.2.7 run as an unprivileged user
(``rsync -a --delete SRC/ DST/`` over unreadable files and directories, and onto a read-only bind
mount), so the parser is tested against what rsync really prints, hostile names included.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pirsyncd.config.parse import parse
from pirsyncd.replica import rsync
from pirsyncd.replica.failing import FailingPaths
from pirsyncd.replica.plan import SourceFacts, deletion_parents
from pirsyncd.source.identity import describe_identity_change, source_identity
from tests.support.fabricated import PARTIAL_SUMMARY, sender_line

SOURCE = "/srv/www"


# -- analyse_errors: sender-side errors about source paths -----------------------------------
@pytest.mark.parametrize("printed, relative", [
    ("sub/secret", "sub/secret"),
    ("with space", "with space"),
    ("new\\#012line", "new\nline"),  # rsync prints unprintable bytes as \#ooo
    ("bs\\#134#012x", "bs\\#012x"),  # a backslash before '#' is escaped itself
    ("latin1-\\#351", "latin1-\udce9"),  # not UTF-8: the surrogate escape os.fsdecode gives
    ("tab\tname", "tab\tname"),
    ('quote"double', 'quote"double'),
    ("single'quote", "single'quote"),
    ("-rf", "-rf"),
    ("--delete", "--delete"),
    ("#hash", "#hash"),
    (";semi", ";semi"),
    ("colon: x (13)", "colon: x (13)"),
    ("日本/ファイル", "日本/ファイル"),
])
def test_an_unreadable_file_is_a_failed_path_named_as_on_disk(printed: str, relative: str) -> None:
    errors = rsync.analyse_errors(f"{sender_line(f'{SOURCE}/{printed}')}\n{PARTIAL_SUMMARY}\n", SOURCE)
    assert errors == rsync.RunErrors({relative: "Permission denied"}, False, False)


def test_unreadable_directories_and_several_failures_in_one_run() -> None:
    stderr = "\n".join([
        sender_line(f"{SOURCE}/-d/#sub", "opendir", " failed: Permission denied (13)"),
        sender_line(f"{SOURCE}/locked/.", "opendir", " failed: Permission denied (13)"),
        sender_line(f"{SOURCE}/disk/bad", after=": Input/output error (5)"),
        sender_line(f"{SOURCE}/gone", "change_dir", " failed: No such file or directory (2)"),
        sender_line(f"{SOURCE}/file-now/x", "link_stat", " failed: Not a directory (20)"),
        "IO error encountered -- skipping file deletion",
        PARTIAL_SUMMARY,
    ])
    errors = rsync.analyse_errors(stderr, SOURCE + "/")  # a trailing slash on the source changes nothing
    assert errors.failed == {"-d/#sub": "Permission denied", "locked": "Permission denied",
                             "disk/bad": "Input/output error",
                             # gone or retyped while rsync ran: not failing, its events are queued
                             "gone": "vanished", "file-now/x": "vanished"}
    assert not errors.destination_trouble
    assert errors.deletions_skipped


def test_the_source_root_itself_failing_is_dot() -> None:
    root = sender_line(SOURCE, "change_dir", " failed: Permission denied (13)")
    assert rsync.analyse_errors(root, SOURCE).failed == {".": "Permission denied"}
    dot = sender_line(f"{SOURCE}/.", "opendir", " failed: Permission denied (13)")
    assert rsync.analyse_errors(dot, SOURCE).failed == {".": "Permission denied"}


def test_vanished_files_are_named_but_not_trouble() -> None:
    errors = rsync.analyse_errors(f'file has vanished: "{SOURCE}/tmp/new\\#012file"\n'
                                  "rsync warning: some files vanished before they could be transferred "
                                  "(code 24) at main.c(1338) [sender=3.2.7]\n", SOURCE)
    assert errors == rsync.RunErrors({"tmp/new\nfile": "vanished"}, False, False)


@pytest.mark.parametrize("line", [
    "WARNING: sub/growing failed verification -- update discarded (will try again).",
    "ERROR: sub/growing failed verification -- update retained.",
])
def test_a_file_that_changed_while_rsync_read_it_is_not_failing(line: str) -> None:
    assert rsync.analyse_errors(f"{line}\n{PARTIAL_SUMMARY}\n", SOURCE) == rsync.RunErrors({"sub/growing": "vanished"},
                                                                                  False, False)


def test_no_errors_at_all() -> None:
    assert rsync.analyse_errors("", SOURCE) == rsync.RunErrors({}, False, False)
    assert rsync.analyse_errors(f"\n   \n{PARTIAL_SUMMARY}\n", SOURCE) == rsync.RunErrors({}, False, False)


# -- analyse_errors: everything else is destination trouble (whole-batch retry) ---------------
@pytest.mark.parametrize("line", [
    'rsync: [generator] chown "/backup/www/." failed: Read-only file system (30)',
    'rsync: [receiver] mkstemp "/backup/www/sub/.new.ebS3gl" failed: Read-only file system (30)',
    'rsync: [generator] failed to set permissions on "/backup/www/.": Operation not permitted (1)',
    'rsync: [receiver] write failed on "/backup/www/big": No space left on device (28)',
    "rsync error: error in file IO (code 11) at receiver.c(381) [receiver=3.2.7]",
    "ssh: connect to host mirror.example port 22: Connection refused",
    "rsync: connection unexpectedly closed (0 bytes received so far) [sender]",
    # A sender error about a path outside the source: a sibling whose name starts the same.
    sender_line("/srv/www2/x"),
    sender_line("/srv/wwwx"),
])
def test_errors_not_about_one_source_path_are_destination_trouble(line: str) -> None:
    errors = rsync.analyse_errors(f"{sender_line(f'{SOURCE}/sub/secret')}\n{line}\n{PARTIAL_SUMMARY}\n", SOURCE)
    assert errors.destination_trouble, line
    assert errors.failed == {"sub/secret": "Permission denied"}  # still parsed, for the log


def test_deletions_skipped_alone() -> None:
    errors = rsync.analyse_errors("IO error encountered -- skipping file deletion\n", SOURCE)
    assert errors == rsync.RunErrors({}, False, True)


def test_deletions_skipped_is_said_on_stdout() -> None:
    """rsync 3.2.7 and 3.5.0 print it as an informational message: on stdout, among the stats."""
    stdout = "sending incremental file list\nIO error encountered -- skipping file deletion\nNumber of files: 4\n"
    stderr = sender_line(f"{SOURCE}/locked", "opendir", " failed: Permission denied (13)") + "\n" + PARTIAL_SUMMARY
    assert rsync.analyse_errors(stderr, SOURCE, stdout=stdout) == rsync.RunErrors(
        {"locked": "Permission denied"}, False, True)
    assert not rsync.analyse_errors(stderr, SOURCE, stdout="Number of files: 4\n").deletions_skipped


# -- deletion runs -------------------------------------------------------------------------
CONFIG = parse(f"[sync]\nsource = {SOURCE}\ndestination = /backup/www\n", "www.conf")


def test_deletion_entries_list_each_directory_s_own_entries() -> None:
    assert rsync.deletion_entries([".", "", "a/b", "-rf", "#hash dir", "new\nline"]) == [
        ".", ".", "a/b/.", "-rf/.", "#hash dir/.", "new\nline/."]
    # On stdin a '#' entry must not read as a comment, and '-rf' is never an option.
    assert rsync.encode_path_list(rsync.deletion_entries(["#hash dir", "-rf"])) == b"./#hash dir/.\0-rf/.\0"


def test_deletions_command_is_one_level_and_deletes() -> None:
    argv = rsync.build_rsync_command(CONFIG, rsync.RunMode.DELETIONS)
    for flag in ("-d", "--delete", "--force", "--ignore-missing-args", "--files-from=-", "--from0"):
        assert flag in argv
    assert "-r" not in argv and "--recursive" not in argv and "--delete-missing-args" not in argv
    assert argv[-2:] == [f"{SOURCE}/", "/backup/www/"]


class Tree:
    """Facts about a source given as plain values: ``Tree(dirs={"a"}, others={"a/f"})``."""

    def __init__(self, dirs: set[str], others: frozenset[str] | set[str] = frozenset()) -> None:
        self.dirs, self.others = dirs, set(others)

    def kind(self, path: str) -> bool | None:
        if path in ("", ".") or path in self.dirs:
            return True
        return False if path in self.others else None


def test_deletion_parents_are_the_nearest_existing_directories() -> None:
    tree = Tree({"a", "a/b", "d", "-rf", "#h", "sp ace", "sp ace/x", "new\nline"})
    assert deletion_parents(tree, ["root-file"]) == ["."]
    assert deletion_parents(tree, ["a/b/c"]) == ["a/b"]
    # A directory and its parent deleted together: the nearest ancestor still there.
    assert deletion_parents(tree, ["d/e/f", "d/e"]) == ["d"]
    assert deletion_parents(tree, ["gone/deeper/still"]) == ["."]
    # Each parent once, sorted, hostile names as they are.
    assert deletion_parents(tree, ["a/b/1", "a/b/2", "-rf/x", "#h/y", "sp ace/x/z", "new\nline/n"]) == [
        "#h", "-rf", "a/b", "new\nline", "sp ace/x"]


def test_a_parent_that_is_now_a_file_is_skipped() -> None:
    assert deletion_parents(Tree({"a"}, {"a/file-now"}), ["a/file-now/x", "a/file-now/x/y"]) == ["a"]
    assert deletion_parents(Tree(set(), {"a"}), ["a/file-now/x"]) == ["."]  # the whole chain is one file


def test_on_disk_a_symlink_to_a_directory_is_not_a_parent(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "real").mkdir()
    (tmp_path / "a" / "file-now").write_text("x\n")
    os.symlink("../real", tmp_path / "a" / "link")
    assert (tmp_path / "a" / "link").is_dir()  # through the link
    facts = SourceFacts(str(tmp_path))
    assert deletion_parents(facts, ["a/link/y", "a/link/y/z", "a/file-now/x"]) == ["a"]
    assert [facts.kind("a"), facts.kind("a/link"), facts.kind("a/file-now"), facts.kind("gone")] == [
        True, False, False, None]


def test_deletion_parents_inside_a_new_directory_are_left_to_its_run() -> None:
    tree = Tree({"new", "new/sub", "old"})
    assert deletion_parents(tree, ["new/sub/x", "new/y", "old/z"], new_dirs=["new"]) == ["old"]
    assert deletion_parents(tree, ["new/sub/x"], new_dirs=["new/sub"]) == []
    # A new directory named like the start of another is not its ancestor.
    assert deletion_parents(tree, ["old/z"], new_dirs=["ol"]) == ["old"]


# -- failing paths ---------------------------------------------------------------------------
def test_each_failing_path_backs_off_on_its_own_up_to_the_maximum() -> None:
    failing = FailingPaths(retry_max_interval=5)
    failing.record({"sub/secret": "Permission denied"}, now=100.0)
    assert failing.deadline() == 101.0
    failing.record({"other": "Input/output error"}, now=100.5)
    assert failing.deadline() == 101.0 and len(failing) == 2
    assert failing.take_due(100.9) == []
    assert failing.take_due(101.0) == ["sub/secret"]
    assert failing.deadline() == 101.5  # handed out: only the other one is still to come
    waits = []
    for attempt in range(2, 6):
        failing.record({"sub/secret": "Permission denied"}, now=200.0)
        waits.append(failing.paths["sub/secret"].retry_at - 200.0)
        assert failing.paths["sub/secret"].attempts == attempt
    assert waits == [2.0, 4.0, 5.0, 5.0]  # doubling, capped at retry_max_interval
    assert failing.paths["other"].attempts == 1  # untouched by the other's failures


def test_take_due_hands_a_path_out_once_until_it_fails_again() -> None:
    failing = FailingPaths(retry_max_interval=300)
    failing.record({"a": "Permission denied"}, now=0.0)
    assert failing.take_due(10.0) == ["a"]
    assert failing.take_due(20.0) == [] and failing.deadline() is None
    assert len(failing) == 1  # still failing until a run sends it
    failing.record({"a": "Permission denied"}, now=20.0)
    assert failing.deadline() == 22.0


def test_a_run_that_sends_a_path_or_an_ancestor_clears_it() -> None:
    failing = FailingPaths(retry_max_interval=300)
    failing.record({"d/x/secret": "Permission denied", "d/y": "Permission denied", "dx": "Permission denied",
                    "e": "Permission denied", "new\nline": "Permission denied"}, now=0.0)
    assert failing.clear(["zzz", "d/x/secret/below"]) == []  # below a path, or unrelated: not cleared
    assert failing.clear(["d"], keep=["d/y"]) == ["d/x/secret"]  # d/y failed again in the same run
    assert sorted(failing.paths) == ["d/y", "dx", "e", "new\nline"]  # "d" is not an ancestor of "dx"
    assert failing.clear(["new\nline"]) == ["new\nline"]
    assert sorted(failing.clear(["."])) == ["d/y", "dx", "e"]  # a full sync sends everything
    assert len(failing) == 0 and failing.summary() == "" and failing.deadline() is None


def test_summary_names_the_paths_and_the_reasons() -> None:
    failing = FailingPaths(retry_max_interval=300)
    failing.record({"sub/secret": "Permission denied"}, now=0.0)
    assert failing.summary() == "1 path failing: sub/secret (Permission denied)"
    failing.record({"b": "Input/output error", "c": "Permission denied", "d": "Permission denied"}, now=0.0)
    assert failing.summary() == ("4 paths failing: b (Input/output error), c (Permission denied), "
                                 "d (Permission denied) and 1 more")


def test_snapshot_for_the_status_file() -> None:
    failing = FailingPaths(retry_max_interval=300)
    failing.record({"sub/secret": "Permission denied"}, now=10.0)
    failing.record({"handed-out": "Permission denied"}, now=0.0)
    failing.take_due(5.0)
    assert failing.snapshot(wall_offset=1000.0) == [
        {"path": "handed-out", "reason": "Permission denied", "attempts": 1, "next_retry": None},
        {"path": "sub/secret", "reason": "Permission denied", "attempts": 1, "next_retry": 1011.0},
    ]


# -- source identity --------------------------------------------------------------------------
def test_source_identity_is_the_directory_not_the_path(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    watched = source_identity(str(source))
    status = os.stat(source)
    assert (watched.device, watched.inode) == (status.st_dev, status.st_ino)
    assert watched.mount_id is not None
    os.symlink(source, tmp_path / "link")
    assert source_identity(str(tmp_path / "link")).same_directory(watched)
    assert describe_identity_change(str(source), watched) is None
    (source / "content").write_text("changes nothing\n")
    assert describe_identity_change(str(source), watched) is None


def test_each_way_the_source_path_stops_leading_to_the_watched_directory(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    watched = source_identity(str(source))
    source.rename(tmp_path / "away")
    assert describe_identity_change(str(source), watched) == f"the source {source} no longer exists"
    source.write_text("a file now\n")
    assert describe_identity_change(str(source), watched) == f"the source {source} is no longer a directory"
    source.unlink()
    source.mkdir()  # another directory in its place, as an unmounted file system leaves
    change = describe_identity_change(str(source), watched)
    assert change is not None and "now leads to another directory" in change
    source.rmdir()
    (tmp_path / "away").rename(source)  # the same directory back: the source again
    assert describe_identity_change(str(source), watched) is None
