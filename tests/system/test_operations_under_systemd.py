"""Operating pirsyncd@NAME under real systemd (issue 15, "Under systemd"): the metrics file
for node_exporter's textfile collector, and ``pirsyncd pause`` / ``pirsyncd resume``.

The metrics file must appear once the instance is in sync, parse with prometheus_client's own
text parser (the container's python3-prometheus-client, which the .deb depends on; copied from
the host for a checkout install), carry pirsyncd_pending_paths for the instance and be readable by the unprivileged user
node_exporter runs as (``prometheus`` in Debian; created here when the image has no such user).

``pirsyncd pause www`` (as root, against the running unit) must show in the status file,
``pirsyncd status`` and systemd's StatusText; a change made while paused is kept (pending) but
not sent until ``pirsyncd resume www``; and a pause survives ``systemctl restart``.

Every instance is stopped, disabled and reset by the ``instances`` fixture, and the pause file
is removed, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.container import PYTHON_SITE, Container
from tests.system.test_systemd import (
    Instances,
    journal_text,
    read_status,
    status_value,
    wait_for_entry,
    wait_until_active,
    wait_until_mirrored,
    write_files,
)
from tests.system.test_systemd import instances as instances

pytestmark = pytest.mark.system

METRICS_DIRECTORY = "/var/lib/prometheus/node-exporter"
METRICS_FILE = f"{METRICS_DIRECTORY}/pirsyncd-www.prom"
PAUSE_FILE = "/var/lib/pirsyncd/www.paused"
SCRAPER = "prometheus"
# Run inside the container as the scraping user: read the file, parse it, print the samples.
PARSE_IN_CONTAINER = """
import json, sys
from prometheus_client.parser import text_string_to_metric_families
with open(sys.argv[1], encoding="utf-8") as stream:
    text = stream.read()
print(json.dumps([[sample.name, sample.labels, sample.value]
                  for family in text_string_to_metric_families(text) for sample in family.samples]))
"""
Sample = tuple[str, dict[str, str], float]


@pytest.fixture
def pause_file_removed(container: Container) -> Iterator[str]:
    """The default pause file of instance www, removed after the test (teardown leaves it)."""
    container.run(["rm", "-f", "--", PAUSE_FILE])
    try:
        yield PAUSE_FILE
    finally:
        container.run(["rm", "-f", "--", PAUSE_FILE])


def ensure_scraper_user(container: Container) -> str:
    """The unprivileged user that reads the metrics: ``prometheus``, created when missing."""
    if container.run(["getent", "passwd", SCRAPER], check=False).returncode != 0:
        container.run(["useradd", "--system", "--user-group", "--no-create-home",
                       "--shell", "/usr/sbin/nologin", SCRAPER])
    return SCRAPER


def as_user(user: str, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]


def ensure_prometheus_client(container: Container) -> None:
    """prometheus_client in the container's python3: the .deb depends on python3-prometheus-client;
    a checkout install (no $PIRSYNCD_DEB) gets the host's pure-Python copy, as it gets inotify_simple."""
    if container.run(["python3", "-c", "import prometheus_client"], check=False).returncode == 0:
        return
    import importlib

    # Debian's python3-prometheus-client imports decorator (python3-decorator).
    for name in ("prometheus_client", "decorator"):
        with contextlib.suppress(ImportError):
            origin = Path(str(importlib.import_module(name).__file__))
            package = origin.parent if origin.name == "__init__.py" else origin
            container.copy_in(package, f"{PYTHON_SITE}/{package.name}")
    container.run(["python3", "-c", "import prometheus_client.parser"])


def read_metrics(container: Container, user: str) -> list[Sample] | None:
    """The samples of the metrics file as ``user`` reads and parses it (the container's
    prometheus_client text parser), or None while it cannot be read."""
    result = container.run(as_user(user, ["python3", "-c", PARSE_IN_CONTAINER, METRICS_FILE]), check=False)
    if result.returncode != 0:
        return None
    return [(name, dict(labels), float(value)) for name, labels, value in json.loads(result.stdout)]


def samples_named(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [sample for sample in samples
            if sample[0] == name and all(sample[1].get(key) == value for key, value in labels.items())]


def test_metrics_file_parses_and_is_readable_by_node_exporter_user(
        container: Container, instances: Instances) -> None:
    ensure_prometheus_client(container)
    user = ensure_scraper_user(container)
    container.run(["rm", "-rf", "--", METRICS_DIRECTORY])
    # What the docs ask of the administrator: the directory writable by the pirsyncd user
    # (there with an ACL; the minimal image has no setfacl, so by owner) and readable by all.
    container.run(["install", "-d", "-m", "0755", "--", "/var/lib/prometheus"])
    container.run(["install", "-d", "-m", "0755", "-o", "pirsyncd", "-g", "pirsyncd", "--", METRICS_DIRECTORY])
    source, destination = instances.create("www", f"[log]\nmetrics_file = {METRICS_FILE}\n")
    unit = "pirsyncd@www.service"
    write_files(container, source, {"index.html": "hello\n"})
    container.run(["systemctl", "enable", "--now", unit])
    wait_until_active(container, "www")
    write_files(container, source, {"new.txt": "new\n"})
    wait_until_mirrored(container, source, destination)
    waited = container.run(["pirsyncd", "wait", "www", "--timeout", "60"], check=False)
    assert waited.returncode == 0, f"{waited.stderr}\n{journal_text(container, unit)}"

    def in_sync_metrics() -> list[Sample] | None:
        samples = read_metrics(container, user)
        if samples and samples_named(samples, "pirsyncd_state", instance="www", state="in-sync")[:1] and \
                samples_named(samples, "pirsyncd_state", instance="www", state="in-sync")[0][2] == 1.0:
            return samples
        return None

    try:
        samples = container.wait_for(in_sync_metrics, 30, 0.3, message=f"{METRICS_FILE} to show in-sync")
    except TimeoutError:
        listing = container.run(["ls", "-la", "--", METRICS_DIRECTORY], check=False).stdout
        text = container.run(["cat", "--", METRICS_FILE], check=False)
        raise AssertionError(f"no in-sync metrics readable by {user}:\n{listing}\n{text.stdout}{text.stderr}\n"
                             f"{journal_text(container, unit)}") from None

    pending = samples_named(samples, "pirsyncd_pending_paths", instance="www")
    assert len(pending) == 1 and pending[0][2] == 0.0, samples
    assert samples_named(samples, "pirsyncd_last_sync_timestamp_seconds", instance="www"), samples
    assert samples_named(samples, "pirsyncd_paused", instance="www")[0][2] == 0.0, samples
    mode = container.run(["stat", "-c", "%a", "--", METRICS_FILE]).stdout.strip()
    assert mode == "644", mode
    # No temporary file is left beside it for the textfile collector to trip over.
    left = container.run(["find", METRICS_DIRECTORY, "-mindepth", "1", "!", "-name", "*.prom"]).stdout
    assert not left.strip(), left
    # The destination label is the destination's name (README.rst): its directory's, here.
    labels = {sample[1]["destination"] for sample in samples
              if sample[1].get("instance") == "www" and "destination" in sample[1]}
    assert labels == {os.path.basename(str(destination).rstrip("/"))}, (
        f"one destination, labelled {sorted(labels)}: {pending}")


def wait_until_paused(container: Container, name: str, paused: bool, pid: str | None = None) -> dict[str, Any]:
    """Wait until the status file says ``paused`` (written by main PID ``pid`` when given)."""
    def matching() -> dict[str, Any] | None:
        result = container.run(["cat", "--", f"/run/pirsyncd/{name}.json"], check=False)
        try:
            status = json.loads(result.stdout) if result.returncode == 0 else None
        except json.JSONDecodeError:
            return None
        if not status or bool(status.get("paused")) != paused:
            return None
        if pid is not None and str(status.get("pid")) != pid:
            return None
        return dict(status)

    try:
        return container.wait_for(matching, 30, 0.2, message=f"status paused={paused}")
    except TimeoutError:
        raise AssertionError(f"the status never said paused={paused}:\n"
                             f"{journal_text(container, f'pirsyncd@{name}.service')}") from None


def assert_change_held_while_paused(container: Container, source: str, destination: str,
                                    relative_path: str, counted_pending: bool = True) -> None:
    """Write ``relative_path``; once the daemon has seen it (its change_seq moved on and, with
    ``counted_pending``, it counts it pending), it must not be at the destination."""
    before = status_value(container, "www", "change_seq")
    assert isinstance(before, int), read_status(container, "www")
    write_files(container, source, {relative_path: f"{relative_path}\n"})

    def seen() -> dict[str, Any] | None:
        change_seq, pending = status_value(container, "www", "change_seq"), status_value(container, "www", "pending")
        if not isinstance(change_seq, int) or change_seq <= before:
            return None
        if counted_pending and not (isinstance(pending, int) and pending > 0):
            return None
        return read_status(container, "www")

    try:
        status = container.wait_for(seen, 30, 0.2, message=f"the paused daemon to see {relative_path}")
    except TimeoutError:
        raise AssertionError(f"the paused daemon never saw {relative_path} (change_seq was {before}):\n"
                             f"{read_status(container, 'www')}\n"
                             f"{journal_text(container, 'pirsyncd@www.service')}") from None
    assert status["paused"] is True and status["state"] == "paused", status
    present = container.run(["test", "-e", f"{destination}/{relative_path}"], check=False).returncode == 0
    assert not present, f"{relative_path} was mirrored while paused:\n{journal_text(container, 'pirsyncd@www.service')}"


def test_pause_resume_and_pause_survives_restart(
        container: Container, instances: Instances, pause_file_removed: str) -> None:
    source, destination = instances.create("www")
    unit = "pirsyncd@www.service"
    write_files(container, source, {"index.html": "hello\n"})
    container.run(["systemctl", "enable", "--now", unit])
    main_pid = wait_until_active(container, "www")
    waited = container.run(["pirsyncd", "wait", "www", "--timeout", "60"], check=False)
    assert waited.returncode == 0, f"{waited.stderr}\n{journal_text(container, unit)}"

    cursor = container.journal_cursor()
    paused = container.run(["pirsyncd", "pause", "www"], check=False)
    assert paused.returncode == 0, f"{paused.stdout}{paused.stderr}\n{journal_text(container, unit)}"
    status = wait_until_paused(container, "www", True)
    assert status["state"] == "paused" and status["pause_file"] == pause_file_removed, status
    assert container.run(["test", "-f", pause_file_removed], check=False).returncode == 0
    shown = container.run(["pirsyncd", "status", "www"], check=False).stdout
    assert "paused" in shown, shown
    wait_for_entry(container, "www", cursor, "the paused journal line",
                   lambda entry: entry.get("PIRSYNCD_PAUSED") == "1")

    assert_change_held_while_paused(container, source, destination, "while-paused.txt")

    def paused_status_text() -> str | None:
        text = container.unit_property(unit, "StatusText")
        return text if "paused" in text and not text.endswith(" 0 pending") else None

    status_text = container.wait_for(paused_status_text, 30, 0.2, message="StatusText to say paused, pending")
    assert status_text.startswith("paused since"), status_text
    systemctl_status = container.run(["systemctl", "status", "--no-pager", unit], check=False).stdout
    assert "Status: \"paused since" in systemctl_status, systemctl_status

    cursor = container.journal_cursor()
    resumed = container.run(["pirsyncd", "resume", "www"], check=False)
    assert resumed.returncode == 0, f"{resumed.stdout}{resumed.stderr}\n{journal_text(container, unit)}"
    wait_until_mirrored(container, source, destination)
    status = wait_until_paused(container, "www", False)
    assert container.run(["test", "-e", pause_file_removed], check=False).returncode != 0
    wait_for_entry(container, "www", cursor, "the resumed journal line",
                   lambda entry: entry.get("PIRSYNCD_PAUSED") == "0")
    waited = container.run(["pirsyncd", "wait", "www", "--timeout", "60"], check=False)
    assert waited.returncode == 0, f"{waited.stderr}\n{journal_text(container, unit)}"

    # A pause survives a restart: the new process starts paused and sends nothing.
    paused = container.run(["pirsyncd", "pause", "www"], check=False)
    assert paused.returncode == 0, f"{paused.stdout}{paused.stderr}\n{journal_text(container, unit)}"
    wait_until_paused(container, "www", True)
    container.run(["systemctl", "restart", unit])
    new_pid = wait_until_active(container, "www")
    assert new_pid != main_pid
    status = wait_until_paused(container, "www", True, pid=new_pid)
    assert status["state"] == "paused", status
    assert "paused" in container.unit_property(unit, "StatusText")
    # Started paused, the initial full sync is owed and covers every change: pending stays 0
    # (the change shows in change_seq, which pirsyncd wait compares with synced_seq).
    assert_change_held_while_paused(container, source, destination, "after-restart.txt", counted_pending=False)
    assert container.run(["pirsyncd", "wait", "www", "--timeout", "0.5"], check=False).returncode != 0

    resumed = container.run(["pirsyncd", "resume", "www"], check=False)
    assert resumed.returncode == 0, f"{resumed.stdout}{resumed.stderr}\n{journal_text(container, unit)}"
    wait_until_mirrored(container, source, destination)
    wait_until_paused(container, "www", False, pid=new_pid)
    waited = container.run(["pirsyncd", "wait", "www", "--timeout", "60"], check=False)
    assert waited.returncode == 0, f"{waited.stderr}\n{journal_text(container, unit)}"
