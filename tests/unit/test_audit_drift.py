"""The audit's pure part (pirsyncd.ops.drift): the argv is the live full sync's, fit for a dry run;
rsync's itemized lines become drift with every name whole; slices cover the tree once. And the
daemon's periodic audit (pirsyncd.ops.auditor) with fabricated child results: what it finds is
rechecked once the destination settled, churn is dropped, audit_repair makes pending changes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pirsyncd.config.parse import parse
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
