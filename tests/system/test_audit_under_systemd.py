"""The periodic audit under real systemd (issue 25): a unit with ``audit_interval`` finds changes
made at the destination behind its back, says so in the status file, ``pirsyncd status``,
``STATUS=`` and the journal (``PIRSYNCD_AUDIT_DRIFT``), and, once ``pirsyncd audit --repair``
has put the mirror right, its next audit finds the destination identical.

Every instance is stopped, disabled and reset by the ``instances`` fixture, also on failure.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.container import Container
from tests.system.test_systemd import (
    Instances,
    journal_text,
    status_value,
    trees_equal,
    wait_until_active,
    write_files,
)
from tests.system.test_systemd import instances as instances

pytestmark = pytest.mark.system


def last_audit(container: Container, name: str) -> dict[str, Any] | None:
    """The status file's ``audit`` of the instance's one destination, once one has ended."""
    destinations = status_value(container, name, "destinations") or []
    audit = destinations[0].get("audit") if destinations else status_value(container, name, "audit")
    return audit if isinstance(audit, dict) and audit.get("time") and not audit.get("running") else None


def test_a_periodic_audit_finds_drift_made_at_the_destination_and_the_repair_clears_it(
        container: Container, instances: Instances) -> None:
    name, unit = "delta", "pirsyncd@delta.service"
    source, destination = instances.create(name, "audit_interval = 2\n")
    write_files(container, source, {"index.html": "home\n", "about/team.html": "team\n"})
    container.run(["systemctl", "start", unit])
    wait_until_active(container, name)
    waited = container.run(["pirsyncd", "wait", name, "--timeout", "60"], check=False)
    assert waited.returncode == 0, f"{waited.stderr}\n{journal_text(container, unit)}"

    # Someone edits the mirror by hand: an extra file and a changed one (another size).
    write_files(container, destination, {"rogue.php": "<?php system($_GET['c']);\n",
                                         "about/team.html": "defaced, much longer than before\n"})

    def drift_found() -> dict[str, Any] | None:
        audit = last_audit(container, name)  # one that ran after both writes
        found = dict(audit["paths"]) if audit else {}
        return audit if "rogue.php" in found and "about/team.html" in found else None

    audit = container.wait_for(drift_found, 60, message="a periodic audit that found the drift")
    found = dict(audit["paths"])
    assert (found.pop("rogue.php"), found.pop("about/team.html")) == ("extra", "modified"), audit
    # Creating rogue.php changed the destination root's mtime: that is drift too, and only that.
    assert found in ({}, {".": "attributes"}), audit
    total = sum(audit["drift"].values())
    assert total == len(audit["paths"]), audit
    journal = container.run(["journalctl", "--no-pager", "-o", "verbose", "-u", unit], check=False).stdout
    assert f"PIRSYNCD_AUDIT_DRIFT={total}" in journal, journal[-3000:]
    assert f"audit found {total} differences" in container.unit_properties(unit, "StatusText")["StatusText"]
    shown = container.run(["pirsyncd", "status", name], check=False)
    assert f"{total} differences" in shown.stdout, shown.stdout

    repaired = container.run(["pirsyncd", "audit", name, "--repair"], check=False)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr  # identical once repaired
    assert "repaired" in repaired.stdout and "identical" in repaired.stdout, repaired.stdout
    assert trees_equal(container, source, destination)
    assert container.run(["pirsyncd", "audit", name], check=False).returncode == 0

    def identical() -> dict[str, Any] | None:
        audit = last_audit(container, name)
        return audit if audit and audit.get("drift") is not None and not sum(audit["drift"].values()) else None

    container.wait_for(identical, 60, message="a periodic audit that finds the destination identical")
    journal = container.run(["journalctl", "--no-pager", "-o", "verbose", "-u", unit], check=False).stdout
    assert "PIRSYNCD_AUDIT_DRIFT=0" in journal, journal[-3000:]
