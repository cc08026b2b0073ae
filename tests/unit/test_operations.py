"""The pieces of issue 15 that need no daemon: counters, hook calls, the pause file's place,
the metrics rendering, and the new options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pirsyncd.config.parse import ConfigError, parse
from pirsyncd.ops.hooks import HookCall
from pirsyncd.ops.overview import Row, format_rows, overview_exit_status
from pirsyncd.ops.pause import PauseSwitch, default_pause_path, write_pause_file
from pirsyncd.ops.report import status_line
from pirsyncd.replica.batch import Batch, Move
from pirsyncd.replica.counters import RunTally
from pirsyncd.replica.itemize import read_itemized

BASE = "[sync]\nsource = /srv/www\ndestination = /var/backups/www\n"


def test_the_tally_counts_runs_by_kind_mode_and_result() -> None:
    tally = RunTally()
    tally.count_run("batch", "changes", "ok", 0.5, {"bytes_sent": 10, "files_transferred": 1})
    tally.count_run("batch", "changes", "ok", 0.25, {"bytes_sent": 5, "files_deleted": 2})
    tally.count_run("batch", "changes", "retry", 1.0, {})
    tally.count_full_sync("overflow")
    view = tally.snapshot()
    assert view["runs"] == [["batch", "changes", "ok", 2], ["batch", "changes", "retry", 1]]
    assert view["rsync_seconds"] == [["batch", "changes", 1.75]]
    assert (view["bytes_sent"], view["files_transferred"], view["files_deleted"]) == (15, 1, 2)
    assert view["full_syncs"] == {"overflow": 1}


def test_a_sync_call_tells_the_batch_paths_and_a_renames_old_path() -> None:
    batch = Batch(changed=["a", "b/c"], removed=["gone"], moves=[Move("old", "new", False)])
    call = HookCall.after_sync("web1", batch, 123, 0)
    assert call.paths == ["a", "b/c", "gone", "new", "old"] and call.path_count == 5
    env = call.environment("www", "on_sync")
    assert env["PIRSYNCD_KIND"] == "batch" and env["PIRSYNCD_BYTES"] == "123" and env["PIRSYNCD_DESTINATION"] == "web1"
    full = HookCall.after_sync("web1", Batch(full=True), 9, 0)
    assert (full.kind, full.paths, full.path_count) == ("full", [], 0)


def test_a_sync_call_adds_what_rsync_changed_and_says_when_the_list_was_cut() -> None:
    changed, _ = read_itemized(b"cd+++++++++ web/\n>f+++++++++ web/index.html\n*deleting   old/a\n", limit=10)
    call = HookCall.after_sync("web1", Batch(new_dirs=["web"], removed=["old"]), 1, 0, changed)
    assert call.paths == ["old", "web", "web/index.html", "old/a"] and call.complete
    assert call.environment("www", "on_sync")["PIRSYNCD_COMPLETE"] == "1"
    cut, _ = read_itemized(b">f+++++++++ a\n>f+++++++++ b\n", limit=1)
    full = HookCall.after_sync("web1", Batch(full=True), 9, 0, cut)
    assert (full.kind, full.paths, full.complete) == ("full", ["a"], False)
    assert full.environment("www", "on_sync")["PIRSYNCD_COMPLETE"] == "0"
    assert not call.coalesce(full).complete and call.coalesce(call).complete


def test_waiting_calls_coalesce() -> None:
    first = HookCall("sync", "default", "batch", ["a", "b"], 2, 10, 0)
    second = HookCall("sync", "default", "batch", ["b", "c"], 2, 5, 0)
    merged = first.coalesce(second)
    assert (merged.paths, merged.path_count, merged.bytes_sent, merged.kind) == (["a", "b", "c"], 4, 15, "batch")
    assert first.coalesce(HookCall("sync", "default", "full", [], 0, 1, 0)).kind == "full"
    failing, recovered = HookCall("failing", "default", error="x"), HookCall("recovered", "default")
    assert failing.coalesce(recovered) is recovered  # on_failure: the latest event wins


def test_the_pause_file_lives_in_the_state_directory_or_beside_the_status_file(tmp_path: Path) -> None:
    assert default_pause_path("www", "/run/pirsyncd/www.json", "/var/lib/pirsyncd") == "/var/lib/pirsyncd/www.paused"
    assert default_pause_path("", "/tmp/x/status.json", None) == "/tmp/x/status.paused"
    switch = PauseSwitch(str(tmp_path / "www.paused"))
    assert switch.refresh() is False and not switch.paused
    write_pause_file(str(tmp_path / "www.paused"), "test")
    assert switch.refresh() is True and switch.paused and switch.since
    assert switch.refresh() is False
    (tmp_path / "www.paused").unlink()
    assert switch.refresh() is True and not switch.paused


def test_hook_options_are_split_like_rsync_flags_and_the_timeout_must_be_positive() -> None:
    config = parse(BASE + "[hooks]\non_sync = sh -c 'xargs -0 purge'\nhook_timeout = 5s\n"
                          "[log]\nmetrics_file = /var/lib/prometheus/node-exporter/www.prom\n")
    assert config.on_sync == ("sh", "-c", "xargs -0 purge") and config.on_failure == ()
    assert config.hook_timeout == 5.0 and config.metrics_file == "/var/lib/prometheus/node-exporter/www.prom"
    with pytest.raises(ConfigError) as error:
        parse(BASE + "[hooks]\non_failure = page 'unclosed\nhook_timeout = 0\n")
    assert len(error.value.problems) == 2


def test_the_status_line_says_paused() -> None:
    line = status_line({"state": "paused", "pending": 1200, "watched_dirs": 3, "paused_since": 0})
    assert line.startswith("paused since never") and "1,200 pending" in line


def test_the_metrics_of_a_snapshot_parse_with_prometheus_clients_parser() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    from prometheus_client import CollectorRegistry, core, generate_latest

    from pirsyncd.ops.metrics import _SnapshotCollector

    snapshot = {"instance": "www", "state": "paused", "pending": 7, "paused": True, "watched_dirs": 4,
                "last_success": 1000.0, "last_change": 2000.0, "failing_paths": [{"path": "x"}],
                "counters": RunTally(runs={("full", "full", "ok"): 1}, full_syncs={"initial": 1}).snapshot(),
                "hooks": {"on_sync": {"ok": 2, "timeout": 1}}, "inotify_overflows": 0, "updated": 3000.0}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot, core))  # type: ignore[arg-type]
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in parser.text_string_to_metric_families(generate_latest(registry).decode())
               for sample in family.samples}
    www = (("destination", "default"), ("instance", "www"))
    assert samples["pirsyncd_pending_paths", www] == 7
    assert samples["pirsyncd_state", (*www, ("state", "paused"))] == 1
    assert sum(value for (name, _), value in samples.items() if name == "pirsyncd_state") == 1
    assert samples["pirsyncd_failing_paths", www] == 1
    assert samples["pirsyncd_rsync_runs_total", (("destination", "default"), ("instance", "www"), ("kind", "full"),
                                                 ("mode", "full"), ("result", "ok"))] == 1
    assert samples["pirsyncd_paused", (("instance", "www"),)] == 1
    assert samples["pirsyncd_hook_failures_total", (("hook", "on_sync"), ("instance", "www"))] == 1
    assert samples["pirsyncd_last_sync_timestamp_seconds", www] == 1000.0


def test_prometheus_client_is_not_imported_without_a_metrics_file() -> None:
    import subprocess
    import sys

    code = ("import sys, pirsyncd.cli, pirsyncd.service, pirsyncd.instance; "
            "print('prometheus_client' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2]).stdout
    assert output.strip() == "False", "start-up memory: import prometheus_client only when metrics_file is set"


def overview_row(instance: str, state: str, running: bool = True, **fields: Any) -> Row:
    values: dict[str, Any] = {"instance": instance, "destination": "-", "state": state, "running": running,
                              "configured": True, "lag_s": None, "pending": 0, "last_success": None,
                              "last_error": None, "status_file": None}
    return Row(**{**values, **fields})


@pytest.mark.parametrize(("states", "expected"), [
    ((("www", "in-sync", True), ("api", "paused", True), ("web", "syncing", True)), 0),
    ((("www", "in-sync", True), ("api", "retrying", True)), 1),
    ((("www", "held", True),), 1),
    ((("www", "source-lost", True),), 1),
    ((("www", "failed", True), ("old", "stopped", False)), 69),
])
def test_status_with_no_name_fails_when_an_instance_is_in_trouble_or_stopped(
        states: tuple[tuple[str, str, bool], ...], expected: int) -> None:
    rows = [overview_row(name, state, running) for name, state, running in states]
    assert overview_exit_status(rows) == expected


def test_the_overview_table_shows_lag_pending_and_ages() -> None:
    rows = [overview_row("www", "retrying", destination="web2", lag_s=125.0, pending=1234, last_success=900.0,
                         last_error="connection refused\nmore"),
            overview_row("old", "stopped", running=False, pending=None, last_error="not running")]
    rows.append(overview_row("big", "initial-sync", lag_s=7300.0, pending=1, progress={
        "reason": "initial", "active": True, "percent": 31, "files_done": 1234567, "files_total": 4012000,
        "files_total_final": True, "rate": 100000000, "eta_s": 22320}))
    lines = format_rows(rows, now=1000.0).splitlines()
    assert lines[0].split() == ["INSTANCE", "DESTINATION", "STATE", "LAG", "PENDING", "LAST", "SUCCESS", "PROGRESS",
                                "LAST", "ERROR"]
    assert lines[1].split() == ["www", "web2", "retrying", "2", "min", "1,234", "1", "min", "ago", "-", "connection",
                                "refused"]
    assert lines[2].split() == ["old", "-", "stopped", "-", "-", "-", "-", "not", "running"]
    assert lines[3].split() == ["big", "-", "initial-sync", "2", "h", "1", "never", "31%", "·", "1,234,567", "of",
                                "4,012,000", "files", "·", "95", "MiB/s", "·", "ETA", "6h", "12m", "-"]
    assert format_rows([]) == "no pirsyncd instance is configured or running"
