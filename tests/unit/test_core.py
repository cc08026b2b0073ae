"""The pure core: exclude patterns, event translation, pending changes, rsync commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from pirsyncd.config.filters import Excluder, PatternError, compile_pattern
from pirsyncd.config.parse import parse
from pirsyncd.replica import rsync
from pirsyncd.replica.pending import Pending
from pirsyncd.source.events import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Change,
    ChangeKind,
    Event,
    EventTranslator,
    WatchTree,
)


# -- filters -------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, path, is_dir, excluded", [
    ("*.tmp", "a.tmp", False, True),
    ("*.tmp", "deep/dir/a.tmp", False, True),
    ("*.tmp", "a.tmpx", False, False),
    ("/cache/", "cache", True, True),
    ("/cache/", "cache", False, False),
    ("/cache/", "sub/cache", True, False),
    ("cache/", "sub/cache", True, True),
    ("build/out", "x/build/out", False, True),
    ("build/out", "x/mybuild/out", False, False),
    ("**/tmp", "a/b/tmp", True, True),
    ("file?.txt", "file1.txt", False, True),
    ("file?.txt", "file/.txt", False, False),
    ("[ab]*", "apple", False, True),
    ("[!ab]*", "apple", False, False),
])
def test_exclude_patterns_match_like_rsync(pattern: str, path: str, is_dir: bool, excluded: bool) -> None:
    assert Excluder([pattern]).matches(path, is_dir) is excluded


def test_everything_below_an_excluded_directory_is_excluded() -> None:
    excluder = Excluder([".git/"])
    assert excluder.excludes("repo/.git/objects/ab", False)
    assert not excluder.excludes("repo/git/objects", False)


@pytest.mark.parametrize("pattern", ["", "  ", "[abc", "a\\b", "+ keep", "- drop", "dir/***", "/"])
def test_unusable_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(PatternError):
        compile_pattern(pattern)


# -- events ----------------------------------------------------------------------------
def make_tree() -> tuple[WatchTree, EventTranslator]:
    tree = WatchTree()
    tree.add(1, "")
    tree.add(2, "a")
    tree.add(3, "a/b")
    tree.add(4, "c")
    return tree, EventTranslator(tree)


def test_file_events_become_changes_and_deletes_forget_watches() -> None:
    tree, translator = make_tree()
    changes = translator.feed([
        Event(1, IN_CREATE, 0, "new"), Event(1, IN_MODIFY, 0, "new"), Event(3, IN_CLOSE_WRITE, 0, "f"),
        Event(1, IN_CREATE | IN_ISDIR, 0, "d"), Event(1, IN_DELETE | IN_ISDIR, 0, "c"),
        Event(2, IN_ATTRIB | IN_ISDIR, 0, "b"), Event(99, IN_MODIFY, 0, "unknown-wd"),
    ])
    assert changes == [Change(ChangeKind.WRITING, "new"), Change(ChangeKind.WRITING, "new"),
                       Change(ChangeKind.CLOSED, "a/b/f"), Change(ChangeKind.NEW_DIR, "d", True),
                       Change(ChangeKind.REMOVED, "c", True), Change(ChangeKind.CHANGED, "a/b", True)]
    assert tree.find("c") is None and 4 not in tree.by_wd


def test_moves_pair_by_cookie_and_the_tree_follows_directory_renames() -> None:
    tree, translator = make_tree()
    changes = translator.feed([
        Event(1, IN_MOVED_FROM | IN_ISDIR, 7, "a"), Event(4, IN_MOVED_TO | IN_ISDIR, 7, "renamed"),
        Event(3, IN_CREATE, 0, "after"),  # wd 3 now lives at c/renamed/b
    ])
    assert changes == [Change(ChangeKind.MOVED, "c/renamed", True, "a"),
                       Change(ChangeKind.WRITING, "c/renamed/b/after")]
    node = tree.by_wd[3]
    assert tree.path_of(node) == "c/renamed/b"


def test_unpaired_moves_are_moves_in_and_out() -> None:
    tree, translator = make_tree()
    changes = translator.feed([Event(1, IN_MOVED_TO | IN_ISDIR, 5, "incoming"),
                               Event(1, IN_MOVED_FROM | IN_ISDIR, 6, "a"), Event(1, IN_MOVED_TO, 8, "file-in")])
    assert changes == [Change(ChangeKind.NEW_DIR, "incoming", True), Change(ChangeKind.CLOSED, "file-in")]
    assert translator.finish_unpaired() == [Change(ChangeKind.REMOVED, "a", True)]
    assert sorted(translator.watches_to_remove) == [2, 3]
    assert tree.find("a") is None


def test_a_directory_moved_out_and_back_in_one_read_keeps_its_watches() -> None:
    """Its MOVED_FROM is held for a MOVED_TO that never comes, while it is back and watched
    again (the kernel hands back the same descriptors): finishing the move out removes none."""
    tree, translator = make_tree()
    changes = translator.feed([Event(1, IN_MOVED_FROM | IN_ISDIR, 6, "a"), Event(1, IN_MOVED_TO | IN_ISDIR, 7, "a")])
    assert changes == [Change(ChangeKind.NEW_DIR, "a", True)]
    assert tree.find("a") is None, "taken out at its MOVED_FROM"
    tree.add(2, "a")  # what the watcher's walk of the new directory does
    tree.add(3, "a/b")
    assert translator.finish_unpaired() == [Change(ChangeKind.REMOVED, "a", True)]
    assert translator.watches_to_remove == []
    assert tree.path_of(tree.by_wd[3]) == "a/b"


def test_a_directory_moved_away_is_out_of_the_tree_until_its_move_is_known() -> None:
    """A directory renamed into the place of one moved out (its MOVED_TO still to come) stays
    watched when the move out is finished, and the one moved out loses its watches."""
    tree, translator = make_tree()
    changes = translator.feed([Event(1, IN_MOVED_FROM | IN_ISDIR, 6, "a"), Event(3, IN_CREATE, 0, "late"),
                               Event(1, IN_MOVED_FROM | IN_ISDIR, 8, "c"), Event(1, IN_MOVED_TO | IN_ISDIR, 8, "a")])
    assert changes == [Change(ChangeKind.WRITING, "a/b/late"), Change(ChangeKind.MOVED, "a", True, "c")]
    assert tree.by_wd[4] is tree.find("a")
    assert translator.finish_unpaired() == [Change(ChangeKind.REMOVED, "a", True)]
    assert sorted(translator.watches_to_remove) == [2, 3]
    assert translator.moved_away == {}


def test_a_directory_placed_back_leaves_a_watch_entered_anew_where_it_is() -> None:
    """Between a rename's two events the walk of another directory met a subdirectory of the
    renamed one (the kernel handed back its watch) and entered it at its new place: placing
    the renamed directory keeps that entry, and does not list the subdirectory twice."""
    tree, translator = make_tree()
    assert translator.feed([Event(1, IN_MOVED_FROM | IN_ISDIR, 6, "a")]) == []
    tree.add(3, "c/b")
    changes = translator.feed([Event(1, IN_MOVED_TO | IN_ISDIR, 6, "renamed")])
    assert changes == [Change(ChangeKind.MOVED, "renamed", True, "a")]
    assert tree.path_of(tree.by_wd[2]) == "renamed" and tree.path_of(tree.by_wd[3]) == "c/b"
    assert tree.find("renamed/b") is None


def test_overflow_root_loss_and_lost_watches() -> None:
    _, translator = make_tree()
    assert translator.feed([Event(-1, IN_Q_OVERFLOW, 0, "")]) == [Change(ChangeKind.RESCAN)]
    assert translator.feed([Event(4, IN_IGNORED, 0, "")]) == [Change(ChangeKind.LOST_WATCH, "c", True)]
    assert translator.feed([Event(1, IN_MOVE_SELF, 0, "")]) == [Change(ChangeKind.ROOT_LOST)]


def test_rename_of_a_directory_never_watched_sends_it_whole() -> None:
    _, translator = make_tree()
    changes = translator.feed([Event(1, IN_MOVED_FROM | IN_ISDIR, 9, "unseen"),
                               Event(1, IN_MOVED_TO | IN_ISDIR, 9, "seen")])
    assert changes == [Change(ChangeKind.REMOVED, "unseen", True), Change(ChangeKind.NEW_DIR, "seen", True)]


# -- pending ----------------------------------------------------------------------------
def test_one_entry_per_path_however_many_events() -> None:
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    for _ in range(1000):
        pending.add(Change(ChangeKind.CHANGED, "dir/file"), now=0.0)
    assert pending.count == 1
    assert pending.take().changed == ["dir/file"]
    assert not pending


def test_new_or_deleted_directories_subsume_their_children() -> None:
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    for index in range(50):
        pending.add(Change(ChangeKind.CHANGED, f"gone/f{index}"), 0.0)
    pending.add(Change(ChangeKind.REMOVED, "gone", True), 0.0)
    pending.add(Change(ChangeKind.NEW_DIR, "new", True), 0.0)
    pending.add(Change(ChangeKind.CHANGED, "new/inside"), 0.0)
    assert pending.count == 2
    batch = pending.take()
    assert batch.removed == ["gone"] and batch.new_dirs == ["new"]


def test_renames_carry_pending_children_and_are_replayed() -> None:
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    pending.add(Change(ChangeKind.CHANGED, "a/written"), 0.0)
    pending.add(Change(ChangeKind.MOVED, "b", True, "a"), 0.0)
    batch = pending.take()
    assert batch.changed == ["b/written"] and batch.removed == ["a"]
    assert batch.moved_paths == ["b"]
    assert [(move.old_path, move.new_path) for move in batch.moves] == [("a", "b")]


def test_renaming_a_new_directory_is_not_replayed() -> None:
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    pending.add(Change(ChangeKind.NEW_DIR, "tmp", True), 0.0)
    pending.add(Change(ChangeKind.MOVED, "final", True, "tmp"), 0.0)
    batch = pending.take()
    assert batch.moves == [] and batch.new_dirs == ["final"] and batch.removed == ["tmp"]


def test_the_oldest_unsent_change_is_when_it_was_read_through_make_due_and_a_put_back() -> None:
    """The lag readers see: from the oldest change not yet sent, not from when a batch came back
    or was made due early."""
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    assert pending.oldest_unsent_at is None
    pending.add(Change(ChangeKind.CHANGED, "f"), 100.0)
    pending.add(Change(ChangeKind.CHANGED, "g"), 105.0)
    pending.make_due(110.0)
    assert pending.oldest_unsent_at == 100.0
    batch = pending.take()
    assert batch.first_change_at == 100.0 and pending.oldest_unsent_at is None
    pending.add(Change(ChangeKind.CHANGED, "h"), 120.0)
    pending.put_back(batch, 130.0)  # the run failed: f and g are as old as before
    assert pending.oldest_unsent_at == 100.0
    pending.take()
    pending.add(Change(ChangeKind.WRITING, "open"), 140.0)  # kept aside while written
    assert pending.oldest_unsent_at == 140.0


def test_the_deadline_is_the_oldest_change_plus_the_delay_however_many_follow() -> None:
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    assert pending.deadline() is None
    pending.add(Change(ChangeKind.CHANGED, "f"), 100.0)
    assert pending.deadline() == 101.0
    for tenth in range(1, 10):  # steady change does not push the deadline back
        pending.add(Change(ChangeKind.CHANGED, f"g{tenth}"), 100.0 + tenth / 10)
    assert pending.deadline() == 101.0
    pending.take(now=101.0)
    pending.add(Change(ChangeKind.CHANGED, "h"), 101.05)  # read while that batch runs: the next one
    assert pending.deadline() == 102.05
    pending.delay = 0.5  # a reload: the new delay counts from the same change
    assert pending.deadline() == 101.55


def test_make_due_sends_at_once_and_a_full_sync_counts_as_a_change() -> None:
    pending = Pending(delay=2.0, full_sync_threshold=1000)
    pending.request_full_sync(now=10.0)
    assert pending.deadline() == 12.0
    pending.add(Change(ChangeKind.CHANGED, "f"), 11.0)
    assert pending.deadline() == 12.0
    pending.make_due(11.0)
    assert pending.deadline() == 11.0
    pending.take(now=11.0)
    pending.make_due(20.0)  # nothing pending: still nothing due
    assert pending.deadline() is None


def test_a_file_being_written_waits_for_its_close_without_holding_back_the_rest() -> None:
    pending = Pending(delay=0.0, full_sync_threshold=1000)
    pending.add(Change(ChangeKind.WRITING, "log"), 100.0, seq=3)
    pending.add(Change(ChangeKind.WRITING, "new"), 100.0, seq=3)
    pending.add(Change(ChangeKind.CHANGED, "new"), 100.1, seq=4)  # its metadata goes with its content
    assert pending and pending.count == 0 and pending.deadline() == 101.0  # kept aside 1 s at most
    assert pending.is_changed("log")  # later events about it need no second look
    pending.add(Change(ChangeKind.CLOSED, "new"), 100.2, seq=5)
    pending.add(Change(ChangeKind.CHANGED, "other"), 100.2, seq=5)
    assert pending.deadline() == 100.2
    batch = pending.take(change_seq=5, now=100.2)
    assert sorted(batch.changed) == ["new", "other"]
    assert batch.change_seq == 2  # "log" from sequence 3 is not sent: the batch covers less
    assert pending and pending.deadline() == 101.0
    pending.add(Change(ChangeKind.WRITING, "log"), 100.5, seq=6)  # still written: not pushed back
    batch = pending.take(change_seq=6, now=101.0)
    assert batch.changed == ["log"] and batch.change_seq == 6 and not pending


def test_a_file_being_written_that_is_renamed_removed_or_released_is_not_lost() -> None:
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    assert pending.hold_limit == 10.0
    for path in ("dir/.a.tmp", "dir/b", "gone", "dir2/c"):
        pending.add(Change(ChangeKind.WRITING, path), 0.0, seq=1)
    pending.add(Change(ChangeKind.MOVED, "dir/a", False, "dir/.a.tmp"), 0.0, seq=2)
    pending.add(Change(ChangeKind.MOVED, "moved", True, "dir"), 0.0, seq=2)
    pending.add(Change(ChangeKind.REMOVED, "gone"), 0.0, seq=2)
    assert list(pending.writing) == ["dir2/c"]
    batch = pending.take(change_seq=2, now=0.0)
    assert sorted(batch.changed) == ["moved/a", "moved/b"] and batch.change_seq == 0
    assert sorted(batch.removed) == ["dir", "gone", "moved/.a.tmp"]
    pending.release_writing(1.0)  # a sync barrier, or the stop
    assert pending.take(change_seq=3, now=1.0).changed == ["dir2/c"] and not pending


def test_a_batch_put_back_sends_its_files_though_they_are_being_written_again() -> None:
    pending = Pending(delay=0.0, full_sync_threshold=1000)
    pending.add(Change(ChangeKind.CLOSED, "f"), 0.0, seq=1)
    pending.add(Change(ChangeKind.CHANGED, "h"), 0.0, seq=2)
    batch = pending.take(change_seq=3, now=0.0)
    pending.add(Change(ChangeKind.WRITING, "f"), 0.1, seq=4)  # opened again while the batch ran
    pending.put_back(batch, 0.2)  # and the batch failed: f as it was at 3 is not there
    again = pending.take(change_seq=4, now=0.2)
    assert sorted(again.changed) == ["f", "h"] and again.change_seq == 4 and not pending


def test_a_file_already_pending_or_inside_a_new_directory_is_not_kept_aside() -> None:
    pending = Pending(delay=0.0, full_sync_threshold=1000)
    pending.add(Change(ChangeKind.CLOSED, "mmapped"), 0.0, seq=1)  # written through mmap: a close alone
    assert pending.take(change_seq=1, now=0.0).changed == ["mmapped"]
    pending.add(Change(ChangeKind.NEW_DIR, "new", True), 0.0)
    pending.add(Change(ChangeKind.CHANGED, "f"), 0.0)
    pending.add(Change(ChangeKind.WRITING, "new/inside"), 0.0, seq=1)
    pending.add(Change(ChangeKind.WRITING, "f"), 0.0, seq=1)
    assert not pending.writing
    batch = pending.take(change_seq=1, now=0.0)
    assert batch.new_dirs == ["new"] and batch.changed == ["f"] and batch.change_seq == 1


@pytest.mark.parametrize("kind", [ChangeKind.CHANGED, ChangeKind.WRITING])
def test_too_many_paths_become_one_full_sync(kind: ChangeKind) -> None:
    pending = Pending(delay=1.0, full_sync_threshold=10)
    for index in range(21):
        pending.add(Change(kind, f"f{index}"), 0.0, seq=1)
    assert len(pending.writing) <= 10  # files being written are kept aside up to the threshold too
    batch = pending.take()
    # Changed files stay listed (bounded by the threshold): compared byte for byte after the full sync.
    assert batch.full and len(batch.changed) == 10


def test_a_full_sync_keeps_the_changed_files_to_compare_byte_for_byte() -> None:
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    pending.add(Change(ChangeKind.CHANGED, "before"), 0.0)
    pending.add(Change(ChangeKind.NEW_DIR, "dir", True), 0.0)
    pending.request_full_sync()
    pending.add(Change(ChangeKind.CHANGED, "after"), 1.0)
    pending.add(Change(ChangeKind.REMOVED, "gone"), 1.0)
    batch = pending.take()
    assert batch.full and batch.changed == ["after", "before"]
    pending.put_back(batch, 2.0)
    assert pending.take().changed == ["after", "before"]


def test_files_a_batch_did_not_send_follow_their_directories_through_renames_to_be_sent_in_full() -> None:
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    pending.add(Change(ChangeKind.CHANGED, "d/x"), 0.0)
    pending.add(Change(ChangeKind.CHANGED, "f"), 0.0)
    batch = pending.take()  # being sent when d is renamed twice and f once (events read meanwhile)
    pending.add(Change(ChangeKind.MOVED, "e", True, "d"), 1.0)
    pending.add(Change(ChangeKind.MOVED, "top", True, "other"), 1.0)
    pending.add(Change(ChangeKind.MOVED, "top/g", True, "e"), 1.0)
    pending.add(Change(ChangeKind.MOVED, "h", False, "f"), 1.0)
    pending.put_back(batch, 2.0, lambda path: None if path in ("d", "d/x", "f") else True)
    again = pending.take()
    assert sorted(again.changed) == ["h", "top/g/x"]  # in full: not renamed from the stale copies
    assert [(move.old_path, move.new_path) for move in again.moves] == [("d", "e"), ("other", "top"), ("e", "top/g"),
                                                                        ("f", "h")]


def test_a_failed_batch_is_put_back_whole() -> None:
    pending = Pending(delay=1.0, full_sync_threshold=1000)
    pending.add(Change(ChangeKind.CHANGED, "x"), 0.0)
    pending.add(Change(ChangeKind.NEW_DIR, "d", True), 0.0)
    batch = pending.take()
    pending.add(Change(ChangeKind.CHANGED, "y"), 1.0)
    pending.put_back(batch, 2.0)
    again = pending.take()
    assert sorted(again.changed) == ["x", "y"] and again.new_dirs == ["d"]


# -- rsync ------------------------------------------------------------------------------
CONFIG = parse("[sync]\nsource = /srv/www\ndestination = /backup/www\nexclude = *.tmp\n"
               "[rsync]\nrsync_flags = --hard-links\n", "www.conf")


def test_batch_command_takes_paths_from_stdin_and_compares_bytes() -> None:
    argv = rsync.build_rsync_command(CONFIG, rsync.RunMode.CHANGES)
    assert argv[0] == "rsync" and argv[-2:] == ["/srv/www/", "/backup/www/"]
    for flag in ("-a", "-r", "--files-from=-", "--from0", "--ignore-times", "--delete-missing-args",
                 "--exclude=*.tmp", "--hard-links", "--timeout=60"):
        assert flag in argv
    fallback = rsync.build_rsync_command(CONFIG, rsync.RunMode.CHANGES, delete_missing_args=False)
    assert "--ignore-missing-args" in fallback and "--delete-missing-args" not in fallback


def test_full_and_verify_commands_trust_the_quick_check() -> None:
    full = rsync.build_rsync_command(CONFIG, rsync.RunMode.FULL)
    assert "--delete" in full and "--files-from=-" not in full and "--ignore-times" not in full
    verify = rsync.build_rsync_command(CONFIG, rsync.RunMode.VERIFY)
    assert "-r" in verify and "--ignore-times" not in verify


def test_hostile_paths_only_ever_reach_stdin() -> None:
    paths = ["-e sh", "--delete-this", "new\nline"]
    argv = rsync.build_rsync_command(CONFIG, rsync.RunMode.CHANGES)
    assert not set(paths) & set(argv)
    assert rsync.encode_path_list(paths) == b"-e sh\0--delete-this\0new\nline\0"
    assert rsync.encode_path_list(["latin1-\udce9"]) == b"latin1-\xe9\0"
    # rsync would skip these as comments
    assert rsync.encode_path_list(["#hash", ";semi", "a#b"]) == b"./#hash\0./;semi\0a#b\0"


@pytest.mark.parametrize("status, outcome", [
    (0, rsync.Outcome.OK), (23, rsync.Outcome.PARTIAL), (24, rsync.Outcome.VANISHED), (10, rsync.Outcome.RETRY),
    (30, rsync.Outcome.RETRY), (255, rsync.Outcome.RETRY), (1, rsync.Outcome.FATAL),
    (25, rsync.Outcome.DELETE_LIMIT), (-9, rsync.Outcome.RETRY), (77, rsync.Outcome.RETRY),
])
def test_exit_status_table(status: int, outcome: rsync.Outcome) -> None:
    assert rsync.classify_exit_status(status).outcome == outcome


def test_unknown_status_is_retried_and_named() -> None:
    verdict = rsync.classify_exit_status(77)
    assert verdict.meaning == "unknown rsync exit status 77"


@pytest.mark.parametrize("stderr", ["Host key verification failed.", "@ERROR: auth failed on module www",
                                    "root@h: Permission denied (publickey).", "@ERROR: Unknown module 'x'"])
def test_refusals_are_fatal_with_a_fix(stderr: str) -> None:
    verdict = rsync.classify_exit_status(5 if "@ERROR" in stderr else 255, stderr)
    assert verdict.outcome == rsync.Outcome.FATAL and verdict.fix


def test_stats_parsing() -> None:
    output = "Number of regular files transferred: 1,204\nTotal bytes sent: 12,345,678\n"
    assert rsync.parse_stats(output) == {"files_transferred": 1204, "bytes_sent": 12345678}


def test_paths_under_a_vanished_directory_become_that_directory(tmp_path: Path) -> None:
    from pirsyncd.replica.plan import SourceFacts, without_missing_parents

    (tmp_path / "kept").mkdir()
    changed, fresh = without_missing_parents(SourceFacts(str(tmp_path)), ["kept/file", "gone/deeper/file", "gone"],
                                             ["gone/new-dir", "kept/new-dir"])
    assert changed == ["kept/file", "gone", "gone", "gone"]
    assert fresh == ["kept/new-dir"]


def test_a_path_through_a_symlinked_directory_is_gone_from_the_source(tmp_path: Path) -> None:
    """Soak seed 5046 (sneaky, delay 0, missing-args): a directory replaced by a symlink to
    another directory that holds the same names. lstat follows symlinks in every component but the
    last, so the old paths below it looked present: they were sent through the symlink, rsync made
    the symlink's name a directory again at the destination (implied directories) and the source's
    symlink never arrived, while ``pirsyncd wait`` said in sync."""
    from pirsyncd.replica.batch import Batch
    from pirsyncd.replica.plan import Renames, RunMode, SourceFacts, plan_transfers

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "file").write_text("x\n")
    (tmp_path / "was-a-directory").symlink_to("real")
    facts = SourceFacts(str(tmp_path))
    assert facts.kind("was-a-directory") is False
    assert facts.kind("was-a-directory/sub") is None
    assert facts.kind("was-a-directory/sub/file") is None
    assert facts.kind("real/sub/file") is False
    batch = Batch(changed=["was-a-directory/sub/file", "was-a-directory"], new_dirs=["was-a-directory/sub"])
    for delete_missing_args in (True, False):
        transfers = plan_transfers(batch, SourceFacts(str(tmp_path)), Renames(),
                                   delete_missing_args=delete_missing_args)
        sent = [path for transfer in transfers if transfer.mode == RunMode.CHANGES for path in transfer.paths]
        assert sent == ["was-a-directory"], (delete_missing_args, transfers)
