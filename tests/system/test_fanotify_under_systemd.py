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

from pirsyncd.source.capabilities import CAP_DAC_READ_SEARCH, CAP_SETPCAP, CAP_SYS_ADMIN, SETS, parse_capabilities
from tests.system.conftest import REPO_ROOT
from tests.system.container import Container, nspawn_unavailable_reason
from tests.system.test_systemd import (
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
# The drop-in's score: the default unit's plus CAP_SYS_ADMIN and CAP_SETPCAP in the bounding set
# systemd starts the worker with (0.3 each), both given up in every set once the mark is placed.
FANOTIFY_MAX_EXPOSURE = 2.2


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
    assert_gave_up_the_mark_s_privilege(container, "fanned")


def assert_gave_up_the_mark_s_privilege(container: Container, name: str) -> None:
    """The running worker holds CAP_DAC_READ_SEARCH alone, in every set (the drop-in granted
    CAP_SYS_ADMIN and CAP_SETPCAP too, for the mark), and its journal says what it gave up."""
    pid = container.unit_property(f"pirsyncd@{name}", "MainPID")
    held = parse_capabilities(container.read_file(f"/proc/{pid}/status"))
    for bit in (CAP_SYS_ADMIN, CAP_SETPCAP):
        assert held.holding(bit) == [], held
    assert held.holding(CAP_DAC_READ_SEARCH) == list(SETS), held
    gave_up = [message_of(entry) for entry in container.journal(f"pirsyncd@{name}.service", f"_PID={pid}")
               if "gave up" in message_of(entry)]
    assert gave_up == ["the fanotify mark is placed: gave up CAP_SYS_ADMIN and CAP_SETPCAP (kept "
                       "CAP_DAC_READ_SEARCH, to make handles into paths)"], gave_up


def test_a_source_mounted_anew_restarts_the_worker_to_place_a_new_mark(container: Container,
                                                                       instances: Instances) -> None:
    """The source's file system replaced (unmounted, another mounted) and a reload naming it
    the source: the worker, which gave up CAP_SYS_ADMIN, exits with 80; systemd starts it again
    with the drop-in's capabilities, and its full sync makes the mirror the new tree."""
    source, destination = instances.create("remounted", "watch_backend = fanotify\n")
    container.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", source])
    try:
        write_files(container, source, {"old/file.txt": "old\n"})
        instances.add_drop_in("remounted", FANOTIFY_DROP_IN.read_text())
        container.run(["systemctl", "start", "pirsyncd@remounted"], check=False)
        first_pid = wait_until_active(container, "remounted")
        wait_until_mirrored(container, source, destination)
        # Busy while the worker reads the source (a resolve, an rsync run): tried again until it is not.
        container.wait_for(lambda: container.run(["umount", source], check=False).returncode == 0, 30,
                           message=f"{source} unmounted")
        container.wait_for(lambda: status_value(container, "remounted", "state") == "source-lost", 60,
                           message="the source lost")
        container.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", source])
        write_files(container, source, {"new/file.txt": "new\n"})
        container.run(["systemctl", "reload", "pirsyncd@remounted"])
        container.wait_for(lambda: container.unit_property("pirsyncd@remounted", "NRestarts") == "1", 90,
                           message="pirsyncd@remounted restarted")
        second_pid = wait_until_active(container, "remounted")
        assert second_pid != first_pid
        wait_until_mirrored(container, source, destination)
        errors = [message_of(entry) for entry in container.journal("pirsyncd@remounted.service", f"_PID={first_pid}")
                  if entry.get("PRIORITY") == PRIORITY_ERR]
        assert errors[-1:] == [f"the source {source} is back on a file system the fanotify mark does not cover "
                               "(mounted again?), and this worker gave up CAP_SYS_ADMIN after placing its mark: "
                               "exiting so that it is started again (systemd's Restart=on-failure does) to place "
                               "a new one"], errors
        assert_gave_up_the_mark_s_privilege(container, "remounted")
        write_files(container, source, {"new/after.txt": "watched by the new mark\n"})
        wait_until_mirrored(container, source, destination)
    finally:
        container.run(["systemctl", "stop", "pirsyncd@remounted"], check=False)
        container.run(["umount", source], check=False)


def test_fanotify_drop_in_exposure_offline(tmp_path: Path) -> None:
    """The unit's score counts the bounding set the worker starts with: CAP_SYS_ADMIN and
    CAP_SETPCAP, 0.3 each over the default unit's 1.6; the worker gives both up once its mark is
    placed (test_fanotify_needs_the_drop_in_and_works_with_it reads its sets)."""
    score, output = offline_exposure(tmp_path, FANOTIFY_DROP_IN)
    assert "CapabilityBoundingSet=~CAP_SYS_ADMIN" in output and "CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)" in output
    assert score <= FANOTIFY_MAX_EXPOSURE, output
    assert f"1.6 OK without this drop-in, {score} OK with it" in FANOTIFY_DROP_IN.read_text(), (
        f"fanotify.conf.example must state the exposure measured: {score}")
