"""How far a full sync is (issue 26): the initial sync of a tree slowed down by rsync's --bwlimit
shows its progress in the status file, STATUS=, ``pirsyncd status`` (with and without a name)
and the metrics; the figures never go backwards and end at 100 %."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, run_pirsyncd
from tests.support.trees import wait_for, wait_until_equal

prometheus_parser = pytest.importorskip("prometheus_client.parser", reason="needs python3-prometheus-client")

FILES = 240
FILE_SIZE = 40_000  # 9.6 MB in all: about 5 s at --bwlimit=2000 (KiB/s)


def make_tree(source: Path) -> None:
    for directory in range(12):
        (source / f"d{directory}").mkdir(parents=True)
        for index in range(FILES // 12):
            (source / f"d{directory}" / f"f{index}").write_bytes(os.urandom(FILE_SIZE))


def metric_names(path: Path) -> set[str]:
    try:
        text = path.read_text()
    except OSError:
        return set()
    return {sample.name for family in prometheus_parser.text_string_to_metric_families(text)
            for sample in family.samples}


def test_an_initial_sync_shows_progress_that_never_goes_backwards_and_ends_at_100(tmp_path: Path) -> None:
    source, destination, metrics = tmp_path / "source", tmp_path / "destination", tmp_path / "pirsyncd.prom"
    make_tree(source)
    destination.mkdir()
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "big.conf").write_text(f"[sync]\nsource = {source}\ndestination = {destination}\n"
                                         f"[rsync]\nrsync_flags = --bwlimit=2000\n[log]\nmetrics_file = {metrics}\n")
    samples: list[dict[str, Any]] = []
    seen: dict[str, Any] = {"lines": set(), "named": None, "overview": None, "metrics": set()}
    daemon = Daemon(tmp_path / "daemon", "big", "--config-dir", str(config_dir),
                    status_file=tmp_path / "run" / "big.json")
    (tmp_path / "run").mkdir()

    def finished() -> dict[str, Any] | None:
        daemon.assert_running()
        status = daemon.status()
        progress = status.get("progress")
        if isinstance(progress, dict) and progress.get("active"):
            if not samples or samples[-1] != progress:
                samples.append(progress)
            seen["lines"].add(status.get("status_line"))
            if seen["named"] is None and progress.get("percent") is not None:
                seen["named"] = run_pirsyncd("status", "--status-file", str(daemon.status_file)).stdout
                overview = run_pirsyncd("status", "--json", "--config-dir", str(config_dir),
                                        "--status-dir", str(tmp_path / "run"))
                seen["overview"] = json.loads(overview.stdout)
            seen["metrics"] |= metric_names(metrics)
        return status if status.get("state") == "in-sync" else None

    with daemon.start(wait_in_sync=False):
        final = wait_for(finished, 120, lambda: f"the initial sync did not end:\n{daemon.describe()}", poll=0.1)
        wait_until_equal(source, destination, 10)

    active = [sample for sample in samples if sample["percent"] is not None]
    assert len(active) >= 3, f"too few progress samples while the sync ran: {samples}\n{daemon.describe()}"
    for earlier, later in itertools.pairwise(samples):
        for key in ("files_done", "bytes"):
            assert later[key] >= earlier[key], f"{key} went backwards: {earlier} -> {later}"
        if earlier["percent"] is not None:
            assert later["percent"] is not None and later["percent"] >= earlier["percent"], (earlier, later)
    assert all(sample["percent"] < 100 and sample["reason"] == "initial" for sample in samples), samples
    assert any(sample["rate"] for sample in samples), samples

    progress = final["progress"]
    assert (progress["percent"], progress["active"], progress["reason"]) == (100, False, "initial"), progress
    assert progress["files_done"] == progress["files_total"] >= FILES + 12
    assert progress["bytes"] >= FILES * FILE_SIZE
    assert progress["finished"] is not None

    assert any(line and line.startswith("initial sync: ") and "% · " in line and " files · " in line
               for line in seen["lines"]), seen["lines"]
    assert "progress:     initial sync: " in seen["named"], seen["named"]
    assert seen["overview"][0]["progress"]["reason"] == "initial", seen["overview"]
    assert {"pirsyncd_full_sync_progress_ratio", "pirsyncd_full_sync_files_done", "pirsyncd_full_sync_files_total",
            "pirsyncd_full_sync_bytes"} <= seen["metrics"], seen["metrics"]
    assert "pirsyncd_full_sync_files_done" not in metric_names(metrics), "only while a full sync runs"
