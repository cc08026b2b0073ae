"""The metrics file: it parses with prometheus_client's own parser and its counts are the runs
the daemon logged, after syncs, failures and an overflow; promtool accepts it and the alert rules."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import REPO, Daemon, overflow_the_queue, start_with_a_small_queue
from tests.support.fakes import FAKE_RSYNC
from tests.support.trees import wait_for, wait_until_equal, write_file

prometheus_parser = pytest.importorskip("prometheus_client.parser", reason="needs python3-prometheus-client")

RULES = REPO / "etc" / "prometheus" / "pirsyncd.rules.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (Debian's prometheus package; "
                                                             "scripts/setup --tests installs it)")
# One journal line per rsync run (pirsyncd.replica.runlog.log_run).
RUN_OK = re.compile(r"(full sync|\w+ of \d+ paths) sent in [\d.]+ s: (\d+) files, ([\d,]+) bytes")
RUN_FAILED = re.compile(r"(full sync|\w+ of \d+ paths) failed after")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]



def read_metrics(path: Path) -> Samples:
    """Every sample of the file, by name and sorted labels (the parser raises on bad text)."""
    samples: Samples = {}
    for family in prometheus_parser.text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(value for (sample_name, sample_labels), value in samples.items()
               if sample_name == name and set(labels.items()) <= set(sample_labels))


def logged_runs(log: str) -> tuple[int, int, int, int]:
    """Runs that succeeded, runs that failed, files and bytes sent, as the log tells them."""
    succeeded = RUN_OK.findall(log)
    return (len(succeeded), len(RUN_FAILED.findall(log)), sum(int(files) for _, files, _ in succeeded),
            sum(int(sent.replace(",", "")) for _, _, sent in succeeded))


def start(tmp_path: Path, source: Path, destination: Path, *extra: str,
          env: dict[str, str] | None = None) -> tuple[Daemon, Path]:
    metrics = tmp_path / "textfile" / "pirsyncd.prom"
    metrics.parent.mkdir()
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1", "--retry-max-interval", "2", "--metrics-file", str(metrics), *extra,
                    env=env)
    return daemon.start(), metrics


def settled(daemon: Daemon, metrics: Path) -> Samples:
    """The metrics once the daemon is in sync and the file tells the last run the log has."""
    daemon.wait_synced()

    def current() -> Samples | None:
        samples = read_metrics(metrics)
        ok, failed, _, _ = logged_runs(daemon.log())
        runs = total(samples, "pirsyncd_rsync_runs_total")
        return samples if runs == ok + failed and total(samples, "pirsyncd_pending_paths") == 0 else None

    return wait_for(current, 10, lambda: f"metrics never matched the log:\n{metrics.read_text()}\n{daemon.log()}")


def test_metrics_count_the_runs_files_and_bytes_of_syncs(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    for index in range(2):
        write_file(source / f"before{index}", f"before {index}\n")
    started = time.time()
    daemon, metrics = start(tmp_path, source, destination)
    with daemon:
        for index in range(5):
            write_file(source / "sub" / f"new{index}", f"new {index}\n" * 100)
        wait_until_equal(source, destination, 20)
        changed_at = time.time()
        (source / "before0").unlink()
        (source / "before1").unlink()
        wait_until_equal(source, destination, 20)
        samples = settled(daemon, metrics)
        ok, failed, files, sent = logged_runs(daemon.log())
        assert failed == 0
        labels = {"instance": "-", "destination": daemon.status()["destinations"][0]["name"]}
        assert total(samples, "pirsyncd_rsync_runs_total", **labels, result="ok") == ok
        assert total(samples, "pirsyncd_rsync_runs_total", kind="full", mode="full", result="ok") == 1
        assert total(samples, "pirsyncd_rsync_runs_total", kind="batch") == ok - 1
        assert total(samples, "pirsyncd_full_syncs_total", reason="initial") == 1
        assert total(samples, "pirsyncd_full_syncs_total") == 1
        assert total(samples, "pirsyncd_files_transferred_total") == files >= 7
        assert total(samples, "pirsyncd_sent_bytes_total") == sent > 5 * 700
        assert total(samples, "pirsyncd_files_deleted_total") == 2
        assert total(samples, "pirsyncd_rsync_seconds_total") > 0
        assert total(samples, "pirsyncd_state", state="in-sync") == 1
        assert total(samples, "pirsyncd_state") == 1, "exactly one state is current"
        assert total(samples, "pirsyncd_paused") == 0
        assert total(samples, "pirsyncd_watched_directories") == 2
        assert total(samples, "pirsyncd_watch_limit") == int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
        assert total(samples, "pirsyncd_inotify_overflows_total") == 0
        assert started <= total(samples, "pirsyncd_last_sync_timestamp_seconds") <= time.time()
        assert changed_at <= total(samples, "pirsyncd_last_change_timestamp_seconds") <= time.time()
        assert stat.S_IMODE(metrics.stat().st_mode) == 0o644, "node_exporter's user must be able to read it"
        assert [path.name for path in metrics.parent.iterdir()] == ["pirsyncd.prom"], "no temporary file left"
        if PROMTOOL:
            checked = subprocess.run([PROMTOOL, "check", "metrics"], input=metrics.read_text(), text=True,
                                     capture_output=True, check=False)
            assert checked.returncode == 0, checked.stdout + checked.stderr


def test_metrics_count_failed_runs_and_show_the_state(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    broken = tmp_path / "destination-down"
    daemon, metrics = start(tmp_path, source, destination, "--rsync-binary", str(FAKE_RSYNC),
                            env={"FAKE_RSYNC_DOWN": str(broken)})
    with daemon:
        broken.touch()
        write_file(source / "while-down", "x\n")
        daemon.wait_state("retrying", 30)
        wait_for(lambda: total(read_metrics(metrics), "pirsyncd_state", state="retrying") == 1, 10,
                 lambda: metrics.read_text())
        samples = read_metrics(metrics)
        assert total(samples, "pirsyncd_pending_paths") >= 1
        assert total(samples, "pirsyncd_rsync_runs_total", kind="batch", result="retry") >= 1
        broken.unlink()
        wait_until_equal(source, destination, 30)
        samples = settled(daemon, metrics)
        ok, failed, _, _ = logged_runs(daemon.log())
        assert failed >= 1
        assert total(samples, "pirsyncd_rsync_runs_total", result="retry") == failed
        assert total(samples, "pirsyncd_rsync_runs_total", result="ok") == ok
        assert total(samples, "pirsyncd_state", state="in-sync") == 1


def test_metrics_count_an_inotify_overflow_and_its_full_sync(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    daemon, metrics = start_with_a_small_queue(lambda: start(tmp_path, source, destination))
    with daemon:
        overflow_the_queue(daemon, source, destination)
        samples = settled(daemon, metrics)
        assert total(samples, "pirsyncd_inotify_overflows_total") == 1
        assert total(samples, "pirsyncd_full_syncs_total", reason="overflow") == 1
        assert total(samples, "pirsyncd_full_syncs_total", reason="initial") == 1
        assert total(samples, "pirsyncd_rsync_runs_total", kind="full", result="ok") == 2


@needs_promtool
@pytest.mark.auto_deletion_mode
def test_the_sample_alert_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "pirsyncd_last_sync_timestamp_seconds > 300 and pirsyncd_pending_paths > 0" in RULES.read_text()


DASHBOARD = REPO / "etc" / "grafana" / "pirsyncd-dashboard.json"


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the Grafana dashboard (its panels' and its variables'), with
    Grafana's own variables replaced as Grafana would before Prometheus sees them."""
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = (variable.get("query") or {}).get("query", "") if isinstance(variable.get("query"), dict) else ""
        match = re.fullmatch(r"label_values\((.*), \w+\)", query)
        if match:
            expressions.append(match[1])
    return [expression.replace("$__rate_interval", "5m").replace("$instance", ".*").replace("$destination", ".*")
            for expression in expressions]


@needs_promtool
@pytest.mark.auto_deletion_mode
def test_the_grafana_dashboard_is_valid_promql_over_metrics_the_daemon_exports(tmp_path: Path) -> None:
    from pirsyncd.ops.metrics import MetricsFile

    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    # Every metric family the daemon can write (a snapshot with every optional part present).
    written = tmp_path / "all.prom"
    progress = {"active": True, "reason": "initial", "percent": 5, "files_done": 1, "files_total": 20, "bytes": 3,
                "eta_s": 9}
    MetricsFile(str(written)).write({"instance": "www", "state": "syncing", "last_change": 1.0, "updated": 2.0,
                                     "hooks": {"on_sync": {"ok": 1}}, "progress": progress, "oldest_unsent": 1.0,
                                     "last_success": 1.0, "audit": {"time": 1.0, "drift": {"extra": 1}}})
    exported = set(re.findall(r"^# HELP (\w+) ", written.read_text(), re.MULTILINE))
    used = {name for expression in expressions for name in re.findall(r"\bpirsyncd_\w+", expression)}
    assert used <= exported, f"the dashboard names metrics the daemon never writes: {sorted(used - exported)}"
    assert {"pirsyncd_state", "pirsyncd_oldest_unsent_timestamp_seconds", "pirsyncd_pending_paths",
            "pirsyncd_rsync_runs_total", "pirsyncd_sent_bytes_total", "pirsyncd_full_syncs_total",
            "pirsyncd_full_sync_progress_ratio", "pirsyncd_audit_drift_entries",
            "pirsyncd_audit_last_timestamp_seconds"} <= used
    # promtool parses each one as a recording rule's expression (a JSON file is YAML too).
    rules = tmp_path / "dashboard.rules.yml"
    recorded = [{"record": f"pirsyncd:dashboard_{index}", "expr": expression}
                for index, expression in enumerate(expressions)]
    rules.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": recorded}]}))
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in checked.stdout
