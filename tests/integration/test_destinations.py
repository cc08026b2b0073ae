"""One watched tree, several destinations (a web farm from one instance): every good
destination converges under churn while another is failing, the failing one converges
once it recovers, the tree is watched once, and per-destination settings reach rsync."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, run_pirsyncd
from tests.support.fakes import FAKE_RSYNC
from tests.support.mounts import Mounts
from tests.support.trees import wait_for, wait_until_equal
from tests.support.workload import Workload, seed_from_environment

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
GOOD = ("web1", "web2", "web3", "web4")


@pytest.fixture
def read_only(tmp_path: Path, mounts: Mounts) -> Path:
    """A destination directory that is a read-only bind mount until ``mounts.unmount``."""
    target = tmp_path / "down"
    target.mkdir()
    mounts.make_read_only(target)
    return target


def farm_config(tmp_path: Path, source: Path, extra: str = "") -> Path:
    lines = ["[sync]", f"source = {source}", "delay = 0.05", "destination = " + f"{tmp_path / GOOD[0]}"]
    lines += [f"    {tmp_path / name}" for name in GOOD[1:]]
    config = tmp_path / "farm.conf"
    config.write_text("\n".join(lines) + "\n" + extra)
    return config


@needs_root
def test_a_churn_reaches_every_good_destination_while_one_is_down(tmp_path: Path, read_only: Path,
                                                                  mounts: Mounts) -> None:
    source, outside = tmp_path / "source", tmp_path / "outside"
    source.mkdir()
    outside.mkdir()
    for name in GOOD:
        (tmp_path / name).mkdir()
    seed = seed_from_environment(13013)
    workload = Workload(source, seed, "mixed", outside)
    workload.run(100)
    config = farm_config(tmp_path, source, f"[destination down]\ndestination = {read_only}\n")
    daemon = Daemon(tmp_path / "daemon", "--config", str(config))
    with daemon.start(wait_in_sync=False):
        wait_for(lambda: daemon.status().get("destinations") and all(
            entry["state"] == ("retrying" if entry["name"] == "down" else "in-sync")
            for entry in daemon.status()["destinations"]), 60, lambda: f"not settled: {daemon.status()}")
        assert daemon.status()["status_line"].startswith("4 of 5 in sync; down: retrying"), daemon.status()
        workload.run(1000)
        for name in GOOD:
            try:
                wait_until_equal(source, tmp_path / name, 120)
            except AssertionError as error:
                raise AssertionError(f"{name}: {workload.describe()}\n{error}\n{daemon.log()[-3000:]}") from None
        for name in GOOD:
            assert run_pirsyncd("wait", "--status-file", str(daemon.status_file), "--destination", name,
                                "--timeout", "60").returncode == 0
        # All of them cannot be in sync while one is down.
        waited = run_pirsyncd("wait", "--status-file", str(daemon.status_file), "--timeout", "1")
        assert waited.returncode == 75, waited.stderr
        daemon.assert_watching(source)
        mounts.unmount(read_only)
        wait_until_equal(source, read_only, 120)
        daemon.wait_synced(60)
        status = daemon.status()
        assert status["state"] == "in-sync" and status["status_line"].startswith("5 of 5 in sync"), status
    assert "down: sync failed" in daemon.log(), "log lines name the destination"


def test_per_destination_settings_reach_rsync(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "file").write_text("x\n")
    for name in (*GOOD[:2], "slow"):
        (tmp_path / name).mkdir()
    calls = tmp_path / "calls"
    config = tmp_path / "farm.conf"
    config.write_text(f"[sync]\nsource = {source}\ndelay = 0.05\ndestination = {tmp_path / GOOD[0]}\n"
                      f"    {tmp_path / GOOD[1]}\n[rsync]\nrsync_binary = {FAKE_RSYNC}\n"
                      f"[destination slow]\ndestination = {tmp_path / 'slow'}\nrsync_flags = --bwlimit=5000\n"
                      "max_delete = 7\n")
    daemon = Daemon(tmp_path / "daemon", "--config", str(config), env={"FAKE_RSYNC_CALLS": str(calls)})
    with daemon.start():
        for name in (*GOOD[:2], "slow"):
            wait_until_equal(source, tmp_path / name, 30)
    runs = [line for line in calls.read_text().splitlines() if "--stats" in line]
    slow = [line for line in runs if line.rstrip().endswith(f"{tmp_path / 'slow'}/")]
    others = [line for line in runs if line not in slow]
    assert slow and others
    assert all("--bwlimit=5000" in line and "--max-delete=7" in line for line in slow), slow
    assert not any("--bwlimit" in line or "--max-delete" in line for line in others), others
    status = daemon.status()
    assert sorted(entry["name"] for entry in status["destinations"]) == ["slow", "web1", "web2"]


@pytest.mark.parametrize("body, complaint", [
    ("destination = {a}\n    {a}/\n", "the same destination as"),
    ("destination = {a}\n[destination b]\ndestination = {a}\n", "the same destination as a"),
    ("destination = {a}\n    {src}/inner\n", "is inside the source"),
    ("destination = {a}\n[destination b]\ndestination = {b}\ndelay = 3\n",
     "[destination b] delay: not a per-destination key"),
    ("[destination b]\ndestination = {b}\nssh_port = many\n", "[destination b] ssh_port: not a whole number"),
    ("[destination b]\nssh_port = 22\n", "[destination b] destination: missing"),
])
def test_check_names_the_destination_that_is_wrong(tmp_path: Path, body: str, complaint: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    text = f"[sync]\nsource = {source}\n" + body.format(a=tmp_path / "a", b=tmp_path / "b", src=source)
    config = tmp_path / "bad.conf"
    config.write_text(text.replace("[sync]\nsource", "[sync]\nsource", 1))
    result = run_pirsyncd("--check", "--config", str(config))
    assert result.returncode == 78, result.stdout + result.stderr
    assert complaint in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_repeated_destination_flags_make_named_destinations(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "f").write_text("1\n")
    first, second = tmp_path / "one" / "www", tmp_path / "two" / "www"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(first),
                    "--destination", str(second), "--delay", "0.05")
    with daemon.start():
        (source / "g").write_text("2\n")
        daemon.wait_synced(30)
        names = [entry["name"] for entry in daemon.status()["destinations"]]
    assert names == ["www", "www-2"]
    for target in (first, second):
        assert (target / "g").read_text() == "2\n"
