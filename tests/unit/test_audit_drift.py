"""The audit's pure part (pirsyncd.ops.drift): the argv is the live full sync's, fit for a dry run;
rsync's itemized lines become drift with every name whole; slices cover the tree once. And the
daemon's periodic audit (pirsyncd.ops.auditor) with fabricated child results: what it finds is
rechecked once the destination settled, churn is dropped, audit_repair makes pending changes."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from pirsyncd.config.parse import ConfigError, parse
from pirsyncd.ops import drift
from pirsyncd.replica.rsync import RunMode, build_rsync_command

CONFIG = parse("[sync]\nsource = /srv/www\ndestination = /backup/www\nexclude = *.tmp\nmax_delete = 10\n"
               "one_file_system = yes\n[rsync]\npartial = yes\nappend_verify = yes\nfull_sync_checksum = yes\n"
               "rsync_flags = -H\n")


def test_the_audit_runs_the_live_full_sync_dry_without_what_would_hide_drift() -> None:
    live = build_rsync_command(CONFIG, RunMode.FULL, kept_out=["proc"])
    argv = drift.build_audit_command(CONFIG, kept_out=["proc"])
    kept = [word for word in live if word not in ("--stats", "--partial", "--append-verify", "--checksum",
                                                  "--max-delete=10")]
    assert [word for word in argv if word not in ("--dry-run", drift.OUT_FORMAT)] == kept
    assert {"--exclude=*.tmp", "--exclude=/proc/**", "-x", "-H", "--delete"} <= set(argv)
    assert argv[-2:] == ["/srv/www/", "/backup/www/"]
    assert "--checksum" in drift.build_audit_command(CONFIG, content=True)


def test_a_slice_and_a_recheck_read_their_paths_from_stdin() -> None:
    sliced = drift.build_slice_command(CONFIG)
    assert {"--files-from=-", "--from0", "--checksum", "--dry-run"} <= set(sliced) and "--delete" not in sliced
    recheck = drift.build_recheck_command(CONFIG)
    assert {"-d", "--files-from=-", "--from0", "--delete", "--dry-run"} <= set(recheck) and "-r" not in recheck
    send = drift.build_repair_send_command(CONFIG)
    assert {"--files-from=-", "--ignore-times", "--force"} <= set(send) and "--dry-run" not in send
    assert "--delete" not in send and "-r" not in send
    assert "--max-delete=10" in drift.build_repair_delete_command(CONFIG)


def test_itemized_lines_become_drift_with_odd_names_whole() -> None:
    output = b"\n".join([
        b"created directory /backup/www",  # not tagged: not a difference
        b"pirsyncd-audit *deleting   gone/inner",
        b"pirsyncd-audit *deleting   gone/",
        b"pirsyncd-audit >f+++++++++ new\\#012line",
        b"pirsyncd-audit >f+++++++++ back\\#134#012slash",
        b"pirsyncd-audit >f+++++++++ caf\\#303\\#251",
        b"pirsyncd-audit >f+++++++++ tab\there",
        b"pirsyncd-audit .d..t...... ./",
        b"pirsyncd-audit >fc........ same-size",
        b"pirsyncd-audit >f.st...... grown",
        b"pirsyncd-audit .f...p..... mode",
        b"pirsyncd-audit cLc........ link",
        b"pirsyncd-audit *deleting   was-dir/child",
        b"pirsyncd-audit >f+++++++++ was-dir",
        b"pirsyncd-audit cd+++++++++ -e sh/",
        b"",
    ])
    assert drift.parse_itemized(output) == {
        "gone/inner": "extra", "gone": "extra", "new\nline": "missing", "back\\#012slash": "missing",
        "café": "missing", "tab\there": "missing", ".": "attributes", "same-size": "modified",
        "grown": "modified", "mode": "attributes", "link": "attributes", "was-dir/child": "extra",
        "was-dir": "modified", "-e sh": "missing"}


def test_a_recheck_confirms_only_what_is_still_different() -> None:
    first = {"a": "missing", "b": "modified", "old": "extra", "old/x": "extra"}
    entries = drift.recheck_entries(first, lambda path: path == ".")
    assert entries == ["a", "b", "."]
    assert drift.confirmed(first, {"a": "missing", "old": "extra", "unrelated": "modified"}) == {
        "a": "missing", "old": "extra", "old/x": "extra"}


def test_a_repair_deletes_the_top_most_extra_entries_and_sends_the_rest_with_their_directories() -> None:
    deletions, sends = drift.repair_plan({"d/old": "extra", "d/old/x": "extra", "d/e/new": "missing"},
                                         lambda path: path in (".", "d", "d/e"))
    assert deletions == ["d/."]
    assert sends == [".", "d", "d/e", "d/e/new"]
    assert drift.counted_deletions({"d/old": "extra", "d/old/x": "extra", "m": "modified"}) == 2


def test_the_slices_hold_every_file_once_and_stay_put() -> None:
    paths = [f"dir{index % 7}/file{index}" for index in range(1000)]
    parts = 5
    owners = [[part for part in range(1, parts + 1) if drift.in_slice(path, part, parts)] for path in paths]
    assert all(len(owner) == 1 for owner in owners)
    sizes = [sum(owner == [part] for owner in owners) for part in range(1, parts + 1)]
    assert min(sizes) > 150  # spread, not clumped by directory
    assert drift.parse_slice("2/5") == (2, 5)
    for text in ("0/5", "6/5", "x", "1/0"):
        with pytest.raises(ValueError, match="K/N"):
            drift.parse_slice(text)


def test_a_summary_names_the_first_paths_of_each_kind_and_json_every_one() -> None:
    found = {f"f{index}": "missing" for index in range(8)} | {"odd\nname": "extra"}
    result = drift.AuditResult("web1", found, 1.0)
    text = drift.format_result(result)
    assert text.splitlines()[0] == "web1: 9 differences (8 missing, 1 extra) in 1.0 s"
    assert "... and 3 more" in text and "'odd\\nname'" in text
    assert result.as_json()["drift"]["missing"] == sorted(f"f{index}" for index in range(8))  # type: ignore[index]
    assert drift.format_result(drift.AuditResult("web1", {}, 0.5, "2/7")) == \
        "web1: identical (content slice 2/7, 0.5 s)"


def test_a_periodic_audit_rechecks_what_it_found_once_the_destination_has_settled(tmp_path: Path) -> None:
    from pirsyncd.ops.auditor import FIRST, RECHECK, PeriodicAudits
    from tests.support.fabricated import exited

    source = tmp_path / "source"
    source.mkdir()
    for name in ("a", "b"):
        (source / name).write_text(name)
    config = parse(f"[sync]\nsource = {source}\ndestination = /backup/www\naudit_interval = 60\n")
    audits = PeriodicAudits()
    audits.configure([("www", config)], 0.0)
    assert audits.due_at("www", 0, True) == 60.0
    audit = audits.audits["www"]
    audit.phase = FIRST  # as step() leaves it; its child is the runner's business
    first = exited(stdout=b"pirsyncd-audit .f...p..... a\npirsyncd-audit >f.s....... b\n")
    assert audits.finished("www", config, first, 61.0, change_seq=7) is None  # not over: settle, recheck
    assert audits.due_at("www", 6, False) is None  # the destination has not every change yet
    assert audits.due_at("www", 7, False) == float("-inf")
    assert audits.due_at("www", 6, True) == float("-inf")  # nothing pending or running: settled
    audit.phase, audit.settled_wall = RECHECK, time.time() + 2  # the source did not change since
    again = exited(stdout=b"pirsyncd-audit .f...p..... a\n")  # b was a change on its way
    assert audits.finished("www", config, again, 62.0, change_seq=9) == {"a": "attributes"}
    assert audits.drift_count("www") == 1 and audits.due_at("www", 9, True) == 122.0
    snapshot = audits.snapshot("www", 0.0)
    assert snapshot is not None and snapshot["drift"] == {"missing": 0, "extra": 0, "modified": 0, "attributes": 1}
    audit.phase, audit.found, audit.settled_wall = RECHECK, {"a": "attributes"}, 0.0  # changed since: churn
    assert audits.finished("www", config, again, 123.0, change_seq=9) == {}
    assert audits.finished("www", config, exited(status=12, stderr="rsync error"), 124.0, 9) is None
    assert "rsync exited with status 12" in (audits.snapshot("www", 0.0) or {})["error"]


def test_audit_repair_makes_the_drift_pending_changes() -> None:
    from pirsyncd.ops.auditor import repair_changes
    from pirsyncd.source.events import Change, ChangeKind

    found = {"new": "missing", "d": "attributes", "d/f": "modified", "old": "extra", "old/x": "extra",
             "gone": "extra", ".": "attributes"}
    assert repair_changes(found, lambda path: path in ("new", "d")) == [
        Change(ChangeKind.CHANGED, ".", True), Change(ChangeKind.CHANGED, "d", True), Change(ChangeKind.CHANGED, "d/f"),
        Change(ChangeKind.REMOVED, "gone", False), Change(ChangeKind.NEW_DIR, "new", True),
        Change(ChangeKind.REMOVED, "old", True)]


def listed(paths: list[str]) -> bytes:
    """What ``rsync --list-only`` prints (LC_ALL=C) for a directory holding ``paths``, and a
    directory, a symlink and a fifo besides: only regular files are in a slice."""
    lines = [b"drwxr-xr-x          4,096 2026/12/07 07:49:35 .", b"drwxr-xr-x          4,096 2026/12/07 07:49:35 d",
             b"lrwxrwxrwx              3 2026/12/07 07:49:35 link -> d/f0",
             b"prw-r--r--              0 2026/12/07 07:49:35 fifo"]
    for index, path in enumerate(paths):
        escaped = b"".join(b"\\#%03o" % byte if not 32 <= byte <= 126 else bytes([byte]) for byte in os.fsencode(path))
        lines.append(b"-rw-r--r-- %14s 2026/12/07 07:49:35 " % f"{index * 997:,}".encode() + escaped)
    return b"\n".join(lines) + b"\n"


def test_the_slices_turn_and_a_listing_picks_each_slice_s_files_whatever_its_chunks() -> None:
    parts = 4
    turns = [0]
    for _ in range(2 * parts):
        turns.append(drift.next_slice(turns[-1], parts))
    assert turns[1:] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert drift.next_slice(6, 4) == 3  # audit_content_slices lowered by a reload: still a slice
    paths = [f"d/f{index}" for index in range(300)] + ["café", "new\nline", " lead", "#hash", "sp ace -> x"]
    text = listed(paths)
    chunks = random.Random(25)
    picked: list[set[str]] = []
    for part in range(1, parts + 1):
        listing, start = drift.SliceListing(part, parts), 0
        while start < len(text):  # cut anywhere, also inside a line or an escape
            size = chunks.randint(1, 200)
            assert listing.feed(text[start:start + size]) == b""  # nothing of the output is kept
            start += size
        listing.feed(b"")
        files = [os.fsdecode(entry.removeprefix(b"./")) for entry in bytes(listing.stdin).split(b"\0")[:-1]]
        assert files == [path for path in paths if drift.in_slice(path, part, parts)]
        assert listing.count == len(files)
        picked.append(set(files))
    assert set().union(*picked) == set(paths) and sum(map(len, picked)) == len(paths)  # every file once


def test_a_listing_sees_the_source_as_the_metadata_pass_does() -> None:
    argv = drift.build_listing_command(CONFIG, kept_out=["proc"])
    assert argv[-2:] == ["--list-only", "/srv/www/"]  # the source alone: nothing reaches the destination
    assert {"--exclude=*.tmp", "--exclude=/proc/**", "-x", "-H"} <= set(argv)
    assert not {"--delete", "--dry-run", "--checksum", drift.OUT_FORMAT} & set(argv)
    for destination, remote in (("rsync://backup@mirror.example/www/", "password_file = /etc/pirsyncd/www.pw"),
                                ("backup@web1.example:/srv/www", "ssh_port = 2222")):
        argv = drift.build_listing_command(parse(f"[sync]\nsource = /srv/www\ndestination = {destination}\n"
                                                 f"[remote]\n{remote}\n"))
        assert argv[-2:] == ["--list-only", "/srv/www/"]  # rsync refuses --password-file without a daemon
        assert not [word for word in argv if word.startswith(("--rsh", "--password-file", "-e"))], argv


def test_a_sliced_periodic_audit_checks_one_slice_in_turn(tmp_path: Path) -> None:
    from pirsyncd.ops.auditor import FIRST, LISTING, SETTLING, SLICE, PeriodicAudits, build_periodic_audit_command
    from tests.support.fabricated import exited

    source = tmp_path / "source"
    source.mkdir()
    config = parse(f"[sync]\nsource = {source}\ndestination = /backup/www\naudit_interval = 60\n"
                   "audit_content_slices = 3\n")
    assert config.audit_content  # implied
    with pytest.raises(ConfigError, match=r"\[sync\] audit_content_slices: slices of the content contradict "
                                          r"audit_content = no; remove one of them"):
        parse(f"[sync]\nsource = {source}\ndestination = /b\naudit_content = no\naudit_content_slices = 3\n",
              "www.conf")
    assert "--checksum" not in build_periodic_audit_command(config, [])  # the whole tree's metadata only
    audits = PeriodicAudits()
    audits.configure([("www", config)], 0.0)
    audit = audits.audits["www"]
    files = [f"f{index}" for index in range(30)]
    seen = []
    for number in range(4):
        now = 61.0 + 60 * number
        audit.phase = FIRST
        assert audits.finished("www", config, exited(), now, change_seq=1) is None
        assert audit.phase == LISTING and audits.due_at("www", 1, True) == float("-inf")  # next child at once
        audit.slice = drift.next_slice(audit.last_slice, 3)  # as step() does, with the listing's child
        audit.listing = drift.SliceListing(audit.slice, 3)
        audit.listing.feed(listed(files))
        audit.listing.feed(b"")
        assert audits.finished("www", config, exited(), now, change_seq=1) is None
        assert audit.phase == SLICE
        assert audits.finished("www", config, exited(), now, change_seq=1) == {}
        snapshot = audits.snapshot("www", 0.0) or {}
        seen.append(snapshot["slice"])
        assert snapshot["drift"] == {"missing": 0, "extra": 0, "modified": 0, "attributes": 0}
    assert seen == ["1/3", "2/3", "3/3", "1/3"]
    # A rewrite the slice's checksum pass finds is rechecked like any drift; a failed audit
    # checks the same slice again.
    audit.phase = FIRST
    audits.finished("www", config, exited(), 400.0, change_seq=2)
    audit.slice, audit.listing, audit.phase = 2, None, SLICE
    assert audits.finished("www", config, exited(stdout=b"pirsyncd-audit >fc........ f7\n"), 400.0, 2) is None
    assert audit.phase == SETTLING and audit.found == {"f7": "modified"}
    audit.phase = SLICE
    assert audits.finished("www", config, exited(status=12, stderr="rsync error"), 460.0, 2) is None
    assert (audits.snapshot("www", 0.0) or {})["slice"] == "2/3" and audit.last_slice == 1
    assert drift.next_slice(audit.last_slice, 3) == 2
