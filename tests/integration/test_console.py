"""The operator's console (issue 26): ``pirsyncd wait`` for a daemon that is starting, and
``pirsyncd status`` over every instance, running or only configured."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import REPO, Daemon, pirsyncd_command, run_pirsyncd
from tests.support.processes import stop_process
from tests.support.trees import wait_for, wait_until_equal, write_file


def write_instance(config_dir: Path, name: str, source: Path, destination: Path) -> None:
    """``config_dir/NAME.conf`` mirroring ``source`` to ``destination``, with a short delay."""
    config_dir.mkdir(exist_ok=True)
    source.mkdir(exist_ok=True)
    destination.mkdir(exist_ok=True)
    (config_dir / f"{name}.conf").write_text(f"[sync]\nsource = {source}\ndestination = {destination}\n"
                                             "delay = 0.1\n")


def test_wait_run_before_the_daemon_starts_waits_for_it_to_come_up_and_sync(tmp_path: Path) -> None:
    """The status file its last run left (stopped) is not a running daemon: wait waits for the
    next one, then for every change made before the call, within one timeout."""
    config_dir, source, destination = tmp_path / "conf", tmp_path / "source", tmp_path / "destination"
    write_instance(config_dir, "www", source, destination)
    with Daemon(tmp_path / "daemon", "www", "--config-dir", str(config_dir)) as earlier:
        status_file = earlier.status_file
    assert earlier.status().get("state") == "stopped"
    write_file(source / "made-while-stopped", "x\n")

    errors = tmp_path / "wait.err"
    with open(errors, "wb") as stream:
        waiting = subprocess.Popen(pirsyncd_command("wait", "www", "--config-dir", str(config_dir),
                                                    "--status-file", str(status_file), "--timeout", "60"),
                                   cwd=REPO, stdout=subprocess.DEVNULL, stderr=stream, stdin=subprocess.DEVNULL)
    daemon = Daemon(tmp_path / "daemon", "www", "--config-dir", str(config_dir))
    try:
        wait_for(lambda: "no pirsyncd is running yet" in errors.read_text() or waiting.poll() is not None, 30,
                 "pirsyncd wait did not start waiting")
        assert waiting.poll() is None, f"pirsyncd wait gave up at once: {waiting.returncode} {errors.read_text()}"
        with daemon.start(wait_in_sync=False):
            assert waiting.wait(timeout=90) == 0, errors.read_text() + daemon.describe()
            assert (destination / "made-while-stopped").read_text() == "x\n", daemon.describe()
            wait_until_equal(source, destination, 10)
    finally:
        stop_process(waiting, 10)


@pytest.mark.auto_deletion_mode
def test_wait_gives_up_after_its_timeout_when_nothing_comes_up(tmp_path: Path) -> None:
    config_dir = tmp_path / "conf"
    write_instance(config_dir, "www", tmp_path / "source", tmp_path / "destination")
    started = time.monotonic()
    waited = run_pirsyncd("wait", "www", "--config-dir", str(config_dir), "--status-file",
                          str(tmp_path / "status.json"), "--timeout", "1")
    assert waited.returncode == 69, waited.stderr
    assert time.monotonic() - started >= 1
    assert f"no running pirsyncd wrote {tmp_path / 'status.json'} within 1 s; start it first" in waited.stderr
    assert "Traceback" not in waited.stderr


@pytest.mark.auto_deletion_mode
def test_wait_for_an_instance_that_is_not_configured_fails_at_once_saying_so(tmp_path: Path) -> None:
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    started = time.monotonic()
    waited = run_pirsyncd("wait", "nosuch", "--config-dir", str(config_dir), "--timeout", "600")
    assert time.monotonic() - started < 30
    assert waited.returncode == 78, waited.stderr
    assert waited.stderr.strip() == (f"pirsyncd wait: no instance 'nosuch' is configured: {config_dir}/nosuch.conf "
                                     "does not exist; name a configured instance, or create it "
                                     "(pirsyncd --sample-config)")


def status_rows(config_dir: Path, status_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    """``pirsyncd status --json`` with no name: its exit status and rows."""
    shown = run_pirsyncd("status", "--json", "--config-dir", str(config_dir), "--status-dir", str(status_dir))
    assert "Traceback" not in shown.stderr, shown.stderr
    return shown.returncode, json.loads(shown.stdout)


def test_status_with_no_name_shows_every_instance_and_destination_and_fails_on_trouble(tmp_path: Path) -> None:
    """Two running instances (one with two destinations) and one configured but stopped: a row each
    per destination; 69 while one is stopped, 0 when all are in sync, 1 when one is held."""
    config_dir, status_dir = tmp_path / "conf", tmp_path / "run"
    status_dir.mkdir()
    write_instance(config_dir, "old", tmp_path / "old-source", tmp_path / "old-destination")
    www_source, api_source = tmp_path / "www-source", tmp_path / "api-source"
    write_instance(config_dir, "api", api_source, tmp_path / "api-destination")
    with open(config_dir / "api.conf", "a") as config:
        config.write("max_delete = 1\n")
    www_source.mkdir()
    (config_dir / "www.conf").write_text(
        f"[sync]\nsource = {www_source}\ndelay = 0.1\n"
        f"[destination one]\ndestination = {tmp_path / 'www-one'}\n"
        f"[destination two]\ndestination = {tmp_path / 'www-two'}\n")
    (config_dir / "example.conf").write_text(run_pirsyncd("--sample-config").stdout)  # a template, not an instance
    for index in range(3):
        write_file(api_source / f"f{index}", f"{index}\n")

    www = Daemon(tmp_path / "www", "www", "--config-dir", str(config_dir), status_file=status_dir / "www.json")
    api = Daemon(tmp_path / "api", "api", "--config-dir", str(config_dir), status_file=status_dir / "api.json")
    with www, api:
        code, rows = status_rows(config_dir, status_dir)
        assert code == 69, rows
        assert [(row["instance"], row["destination"], row["state"], row["running"]) for row in rows] == [
            ("api", "api-destination", "in-sync", True), ("old", "old-destination", "stopped", False),
            ("www", "one", "in-sync", True), ("www", "two", "in-sync", True)]
        assert "systemctl start pirsyncd@old" in rows[1]["last_error"]
        table = run_pirsyncd("status", "--config-dir", str(config_dir), "--status-dir", str(status_dir))
        assert table.returncode == 69
        assert table.stdout.splitlines()[0].split() == ["INSTANCE", "DESTINATION", "STATE", "LAG", "PENDING",
                                                        "LAST", "SUCCESS", "PROGRESS", "LAST", "ERROR"]
        assert table.stdout.splitlines()[2].split()[:5] == ["old", "old-destination", "stopped", "-", "-"]

        (config_dir / "old.conf").unlink()
        code, rows = status_rows(config_dir, status_dir)
        assert code == 0, rows
        for row in rows:
            assert (row["state"], row["lag_s"], row["pending"]) == ("in-sync", None, 0), row
            assert row["last_success"] is not None and row["last_error"] is None, row

        for index in range(3):  # three deletions, max_delete 1: api is held
            (api_source / f"f{index}").unlink()
        api.wait_state("held", 30)

        def held_a_while() -> list[dict[str, Any]] | None:
            code, rows = status_rows(config_dir, status_dir)
            lag = rows[0]["lag_s"]
            return rows if code == 1 and lag is not None and lag >= 1 else None

        rows = wait_for(held_a_while, 30,
                        lambda: f"no growing lag for the held api: {status_rows(config_dir, status_dir)}")
        assert (rows[0]["instance"], rows[0]["state"]) == ("api", "held")
        assert rows[0]["pending"] >= 1 and "max_delete" in (rows[0]["last_error"] or "")
        assert [row["state"] for row in rows[1:]] == ["in-sync", "in-sync"]
