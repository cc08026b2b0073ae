"""watch_backend under real systemd 252: the default unit cannot watch with fanotify (its system
call filter and capabilities), so auto falls back to inotify saying why and fanotify fails once
with exit status 79 and no restart loop; the shipped drop-in (systemd/fanotify.conf.example)
makes fanotify work, at the exposure it states.

The container stands for a host: systemd-nspawn's own system call filter, which refuses the
fanotify calls to everything in a container, is widened for them here, so what refuses them in
the first part is the unit's own filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import REPO_ROOT
from tests.system.container import Container, nspawn_unavailable_reason
from tests.system.test_systemd import (
    MAX_EXPOSURE,
    PRIORITY_ERR,
    SYSTEMD_DIRECTORY,
    Instances,
    message_of,
    offline_exposure,
    read_status,
    status_value,
    wait_until_active,
    wait_until_mirrored,
    write_files,
)
from tests.system.test_systemd import instances as instances  # on this module's container

pytestmark = pytest.mark.system

FANOTIFY_DROP_IN = SYSTEMD_DIRECTORY / "fanotify.conf.example"
FANOTIFY_CALLS = "fanotify_init fanotify_mark open_by_handle_at"


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    """A booted container whose nspawn filter lets the fanotify calls through, as a host does."""
    reason = nspawn_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with Container(nspawn_arguments=[f"--system-call-filter={FANOTIFY_CALLS}"]) as booted:
        booted.install_pirsyncd(REPO_ROOT)
        yield booted


def test_fanotify_needs_the_drop_in_and_works_with_it(container: Container, instances: Instances) -> None:
    """The default unit: auto falls back to inotify saying why, fanotify fails once (79, no
    restart loop, one line); with the drop-in, fanotify watches and mirrors."""
    auto_source, auto_destination = instances.create("auto", "watch_backend = auto\n")
    container.run(["systemctl", "start", "pirsyncd@auto"])
    wait_until_active(container, "auto")
    container.wait_for(lambda: status_value(container, "auto", "state") == "in-sync", 60, message="in sync")
    status = read_status(container, "auto")
    assert status["watch_backend"] == "inotify" and "fanotify_init was refused" in status["watch_backend_reason"], (
        status)
    write_files(container, auto_source, {"by-inotify.txt": "x\n"})
    wait_until_mirrored(container, auto_source, auto_destination)

    instances.create("refused", "watch_backend = fanotify\n")
    container.run(["systemctl", "start", "pirsyncd@refused"], check=False)
    container.wait_for(lambda: container.unit_property("pirsyncd@refused", "ActiveState") == "failed", 60,
                       message="pirsyncd@refused failed")
    assert container.unit_properties("pirsyncd@refused", "ExecMainStatus", "NRestarts") == {
        "ExecMainStatus": "79", "NRestarts": "0"}
    errors = [message_of(entry) for entry in container.journal("pirsyncd@refused.service")
              if entry.get("PRIORITY") == PRIORITY_ERR and entry.get("_PID") != "1"]
    assert len(errors) == 1 and errors[0].startswith("watch_backend = fanotify, but fanotify cannot watch"), errors

    source, destination = instances.create("fanned", "watch_backend = fanotify\n")
    write_files(container, source, {"at-start.txt": "start\n"})
    instances.add_drop_in("fanned", FANOTIFY_DROP_IN.read_text())
    container.run(["systemctl", "start", "pirsyncd@fanned"], check=False)  # a failure: its journal, below
    wait_until_active(container, "fanned")
    container.wait_for(lambda: status_value(container, "fanned", "state") == "in-sync", 60, message="in sync")
    status = read_status(container, "fanned")
    assert status["watch_backend"] == "fanotify" and status["watched_dirs"] == 0, status
    write_files(container, source, {"deep/er/new.txt": "new\n"})
    container.run(["mv", f"{source}/at-start.txt", f"{source}/deep/moved.txt"])
    wait_until_mirrored(container, source, destination)
    assert container.run(["pirsyncd", "wait", "fanned", "--timeout", "60"], check=False).returncode == 0
    shown = container.run(["pirsyncd", "status", "fanned"]).stdout
    assert "watching:     fanotify" in shown, shown


def test_fanotify_drop_in_exposure_offline(tmp_path: Path) -> None:
    score, output = offline_exposure(tmp_path, FANOTIFY_DROP_IN)
    assert "CapabilityBoundingSet=~CAP_SYS_ADMIN" in output and score <= MAX_EXPOSURE, output
    assert f"1.6 OK without this drop-in, {score} OK with it" in FANOTIFY_DROP_IN.read_text(), (
        f"fanotify.conf.example must state the exposure measured: {score}")
