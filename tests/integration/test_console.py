"""The operator's console (issue 26): ``pirsyncd wait`` for a daemon that is starting, and
``pirsyncd status`` over every instance, running or only configured."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

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
