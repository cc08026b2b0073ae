"""A restart of pirsyncd@NAME under real systemd is not a full sync (issue 14): the state lives
in StateDirectory= (/var/lib/pirsyncd/NAME.state, written by the unprivileged worker); after
``systemctl stop``, changes, ``systemctl start`` and after a SIGKILL that systemd answers with a
restart, the journal says "warm start:", no full sync runs, the mirror is exact, and
``pirsyncd status NAME`` says what the start did.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.system.container import Container
from tests.system.test_systemd import (
    Instances,
    journal_text,
    message_of,
    status_value,
    wait_for_entry,
    wait_until_active,
    wait_until_mirrored,
    write_files,
)
from tests.system.test_systemd import instances as instances

pytestmark = pytest.mark.system

STATE_FILE = "/var/lib/pirsyncd/warm.state"


@pytest.fixture
def state_removed(container: Container) -> Iterator[None]:
    try:
        yield
    finally:
        container.run(["rm", "-f", STATE_FILE, f"{STATE_FILE}.dirs"], check=False)


def messages_since(container: Container, cursor: str | None) -> list[str]:
    return [message_of(entry) for entry in container.journal("pirsyncd@warm.service", since_cursor=cursor)]


def wait_in_sync_with_state(container: Container) -> None:
    container.wait_for(lambda: status_value(container, "warm", "state") == "in-sync"
                       and status_value(container, "warm", "watermark"), 60,
                       message="in sync with a watermark written")


def test_restarts_are_warm(container: Container, instances: Instances, state_removed: None) -> None:
    restarts_are_warm(container, instances)


def restarts_are_warm(container: Container, instances: Instances, extra_config: str = "",
                      drop_in: str | None = None) -> None:
    """The instance "warm" (with ``extra_config`` and the unit's ``drop_in``): a first start is a
    full sync that writes the state; a clean stop, changes, a start; a SIGKILL: both starts warm."""
    source, destination = instances.create("warm", extra_config)
    if drop_in is not None:
        instances.add_drop_in("warm", drop_in)
    write_files(container, source, {f"dir{n}/file{m}": f"{n} {m}\n" for n in range(5) for m in range(20)})
    cursor = container.journal_cursor()
    container.run(["systemctl", "start", "pirsyncd@warm"])
    wait_until_active(container, "warm")
    wait_until_mirrored(container, source, destination)
    wait_in_sync_with_state(container)
    assert any("full sync at start: no state file yet" in line for line in messages_since(container, cursor))
    owner = container.run(["stat", "-c", "%U", STATE_FILE]).stdout.strip()
    assert owner == "pirsyncd", owner

    # A clean stop, changes while down, a start.
    container.run(["systemctl", "stop", "pirsyncd@warm"], timeout=120)
    container.run(["mv", f"{source}/dir1", f"{source}/renamed"])
    container.run(["rm", "-rf", f"{source}/dir2"])
    write_files(container, source, {"dir0/file0": "rewritten\n", "new/deep/file": "new\n"})
    cursor = container.journal_cursor()
    container.run(["systemctl", "start", "pirsyncd@warm"])
    wait_until_active(container, "warm")
    wait_until_mirrored(container, source, destination)
    wait_for_entry(container, "warm", cursor, "the warm start line", lambda entry: message_of(entry).startswith(
        "warm start:"))
    wait_in_sync_with_state(container)
    lines = messages_since(container, cursor)
    assert not any("full sync" in line for line in lines), "\n".join(lines)
    status = container.run(["pirsyncd", "status", "warm"]).stdout
    assert "last start:   warm" in status and "watermark:" in status, status

    # SIGKILL: systemd restarts the worker (Restart=on-failure), which starts warm again.
    first_pid = wait_until_active(container, "warm")
    cursor = container.journal_cursor()
    write_files(container, source, {"after-kill/file": "x\n"})
    container.run(["systemctl", "kill", "--signal=SIGKILL", "pirsyncd@warm"])

    def restarted() -> bool:
        properties = container.unit_properties("pirsyncd@warm.service", "SubState", "MainPID")
        return properties.get("SubState") == "running" and properties.get("MainPID") not in ("0", first_pid)

    container.wait_for(restarted, 120, 0.5, message="systemd restarting the killed worker")
    write_files(container, source, {"while-restarting/file": "y\n"})
    wait_until_mirrored(container, source, destination, timeout=90)
    wait_for_entry(container, "warm", cursor, "the warm start after SIGKILL",
                   lambda entry: message_of(entry).startswith("warm start:"), timeout=90)
    lines = messages_since(container, cursor)
    assert not any("full sync sent" in line for line in lines), journal_text(container, "pirsyncd@warm.service")
