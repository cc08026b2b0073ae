"""The operator's console under real systemd (issue 26): ``pirsyncd status`` with no name over two
units, from their status files in /run/pirsyncd and the configs in /etc/pirsyncd, as a monitoring
check (0 while both run in sync, 69 once one is stopped though configured); ``pirsyncd plan`` of
a configured instance shows what its full sync would delete and changes nothing.

Every instance is stopped, disabled and reset by the ``instances`` fixture, also on failure.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.system.container import Container
from tests.system.test_systemd import Instances, journal_text, wait_until_active, write_files
from tests.system.test_systemd import instances as instances

pytestmark = pytest.mark.system


def overview(container: Container) -> tuple[int, list[dict[str, Any]]]:
    """``pirsyncd status --json`` with no name, as root, with the packaged defaults."""
    shown = container.run(["pirsyncd", "status", "--json"], check=False)
    assert "Traceback" not in shown.stderr, shown.stderr
    return shown.returncode, json.loads(shown.stdout)


def test_status_with_no_name_lists_two_units_and_fails_once_one_is_stopped(
        container: Container, instances: Instances) -> None:
    sources = {name: instances.create(name)[0] for name in ("alpha", "beta")}
    for name, source in sources.items():
        write_files(container, source, {f"{name}.txt": f"{name}\n"})
        container.run(["systemctl", "start", f"pirsyncd@{name}"])
    for name in sources:
        wait_until_active(container, name)
        waited = container.run(["pirsyncd", "wait", name, "--timeout", "60"], check=False)
        assert waited.returncode == 0, f"{waited.stderr}\n{journal_text(container, f'pirsyncd@{name}.service')}"

    code, rows = overview(container)
    assert code == 0, rows
    assert [(row["instance"], row["state"], row["running"], row["status_file"]) for row in rows] == [
        ("alpha", "in-sync", True, "/run/pirsyncd/alpha.json"), ("beta", "in-sync", True, "/run/pirsyncd/beta.json")]
    assert all(row["last_success"] and row["last_error"] is None and row["pending"] == 0 for row in rows), rows
    table = container.run(["pirsyncd", "status"], check=False)
    assert table.returncode == 0, table.stderr
    assert [line.split()[:3] for line in table.stdout.splitlines()[1:]] == [
        ["alpha", "alpha", "in-sync"], ["beta", "beta", "in-sync"]], table.stdout

    container.run(["systemctl", "stop", "pirsyncd@beta"])
    code, rows = overview(container)
    assert code == 69, rows
    assert [(row["instance"], row["state"], row["running"]) for row in rows] == [
        ("alpha", "in-sync", True), ("beta", "stopped", False)]
    assert rows[1]["last_error"] == "not running: systemctl start pirsyncd@beta", rows
    assert rows[1]["last_success"], "the last success its run left is kept"


def test_plan_of_a_configured_instance_shows_its_deletions_and_changes_nothing(
        container: Container, instances: Instances) -> None:
    source, destination = instances.create("gamma", "max_delete = 1\n")
    write_files(container, source, {"index.html": "new\n"})
    write_files(container, destination, {"old/a.html": "stale\n", "old/b.html": "stale\n"})
    before = container.run(["find", destination, "-printf", "%P %s %T@\\n"]).stdout
    planned = container.run(["pirsyncd", "plan", "gamma", "--json"], check=False)
    assert planned.returncode == 65, planned.stdout + planned.stderr
    [gamma] = json.loads(planned.stdout)["destinations"]
    assert gamma["deleted"]["count"] == 3 and sorted(gamma["deleted"]["first"]) == ["old", "old/a.html", "old/b.html"]
    assert gamma["created"]["first"] == ["index.html"]
    assert "more than max_delete (1)" in planned.stderr
    assert container.run(["find", destination, "-printf", "%P %s %T@\\n"]).stdout == before
