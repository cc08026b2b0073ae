"""One pirsyncd@ instance with two destinations under real systemd (issue 13): both mirror, the
status file and ``systemctl status`` show both, and ``journalctl -u pirsyncd@NAME
PIRSYNCD_DESTINATION=<name>`` returns that destination's run lines."""

from __future__ import annotations

import pytest

from tests.system.container import Container
from tests.system.test_systemd import (
    Instances,
    config_text,
    journal_text,
    read_status,
    wait_until_active,
    wait_until_mirrored,
    write_files,
)
from tests.system.test_systemd import instances as instances

pytestmark = pytest.mark.system


def test_two_destinations_status_and_journal_per_destination(
        container: Container, instances: Instances) -> None:
    source, first = instances.create("farm", destination="/srv/mirrors/web1")
    second = "/srv/mirrors/web2"
    container.run(["rm", "-rf", "--", second])
    container.run(["install", "-d", "-o", "pirsyncd", "-g", "pirsyncd", "--", second])
    instances.write_config("farm", config_text(source, f"{first}\n    {second}", 0.2))
    container.run(["systemctl", "daemon-reload"])
    write_files(container, source, {"index.html": "hello\n"})
    container.run(["systemctl", "enable", "--now", "pirsyncd@farm"])
    wait_until_active(container, "farm")

    write_files(container, source, {"new.txt": "new\n", "deep/er/file.txt": "deep\n"})
    for destination in (first, second):
        try:
            wait_until_mirrored(container, source, destination)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{journal_text(container, 'pirsyncd@farm.service')}") from None
    waited = container.run(["pirsyncd", "wait", "farm", "--timeout", "60"], check=False)
    assert waited.returncode == 0, waited.stderr
    for name in ("web1", "web2"):
        waited = container.run(["pirsyncd", "wait", "farm", "--destination", name, "--timeout", "60"], check=False)
        assert waited.returncode == 0, waited.stderr

    status = read_status(container, "farm")
    assert status["state"] == "in-sync", status
    entries = {entry["name"]: entry for entry in status["destinations"]}
    assert sorted(entries) == ["web1", "web2"], status
    assert entries["web1"]["destination"] == first and entries["web2"]["destination"] == second
    assert all(entry["state"] == "in-sync" and entry["last_success"] for entry in entries.values()), status

    unit = "pirsyncd@farm.service"
    status_text = container.unit_property(unit, "StatusText")
    assert status_text.startswith("2 of 2 in sync"), status_text
    shown = container.run(["systemctl", "status", "--no-pager", unit], check=False).stdout
    assert "2 of 2 in sync" in shown, shown
    listed = container.run(["pirsyncd", "status", "farm"], check=False).stdout
    assert "web1" in listed and "web2" in listed, listed

    for name in ("web1", "web2"):
        lines = container.journal(unit, f"PIRSYNCD_DESTINATION={name}")
        runs = [entry for entry in lines if entry.get("PIRSYNCD_KIND") in ("batch", "full-sync", "full")]
        assert lines and all(entry.get("PIRSYNCD_DESTINATION") == name for entry in lines), (
            journal_text(container, unit))
        assert runs or any("PIRSYNCD_RSYNC_STATUS" in entry for entry in lines), (
            f"no run lines for {name}: {[entry.get('MESSAGE') for entry in lines]}")
