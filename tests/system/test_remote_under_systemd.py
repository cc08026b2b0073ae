"""pirsyncd@.service under real systemd mirroring to remote destinations (issue 4).

The hardened unit must keep working for ssh and rsync-daemon destinations,
not only for local ones (tests/system/test_systemd.py). Each test starts a
real server on the host's loopback (tests/support/servers.py); the container
shares the host's network namespace, so pirsyncd@NAME.service inside it
reaches that server at 127.0.0.1. The credentials go to /etc/pirsyncd/,
owned by the pirsyncd user with mode 0600, the way an administrator would
install them; the files must arrive on the host side with the same content.

Every server is stopped by PID (its context manager) and every instance is
stopped, disabled and reset, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import RSYNC, SSHD, RsyncDaemon, SshServer
from tests.system.container import Container
from tests.system.test_systemd import journal_text, message_of, wait_until_active, write_files

pytestmark = pytest.mark.system

CONFIG_DIRECTORY = "/etc/pirsyncd"
PRIORITY_INFO = "6"
INITIAL_FILES = {"index.html": "hello\n"}
LATER_FILES = {"new.txt": "new\n", "deep/er/file.txt": "deep\n", "with space.txt": "spaced out\n"}


class RemoteInstance:
    """One pirsyncd instance in the container with a remote destination; torn down by :meth:`teardown`."""

    def __init__(self, container: Container, name: str) -> None:
        self.container = container
        self.name = name
        self.unit = f"pirsyncd@{name}.service"
        self.source = f"/srv/sources/{name}"
        self.files: list[str] = []

    def install_credential(self, host_file: Path, suffix: str) -> str:
        """Copy ``host_file`` to /etc/pirsyncd/NAME.SUFFIX, pirsyncd:pirsyncd 0600; return that path."""
        path = f"{CONFIG_DIRECTORY}/{self.name}.{suffix}"
        self.container.copy_in(host_file, path, 0o600)
        self.container.run(["chown", "pirsyncd:pirsyncd", "--", path])
        self.files.append(path)
        return path

    def configure(self, destination: str, remote: str) -> None:
        """Create the source with INITIAL_FILES and write /etc/pirsyncd/NAME.conf."""
        self.container.run(["rm", "-rf", "--", self.source])
        self.container.run(["install", "-d", self.source])
        write_files(self.container, self.source, INITIAL_FILES)
        config = f"{CONFIG_DIRECTORY}/{self.name}.conf"
        self.container.write_file(config, (f"[sync]\nsource = {self.source}\ndestination = {destination}\n"
                                           f"delay = 0.2\n\n[remote]\n{remote}"))
        self.files.append(config)
        self.container.run(["systemctl", "daemon-reload"])

    def teardown(self) -> None:
        self.container.run(["systemctl", "disable", "--now", self.unit], check=False)
        self.container.run(["systemctl", "reset-failed", self.unit], check=False)
        self.container.run(["rm", "-rf", "--", self.source, f"/run/pirsyncd/{self.name}.json", *self.files],
                           check=False)
        self.container.run(["systemctl", "daemon-reload"], check=False)


@pytest.fixture
def remote_instance(container: Container, request: pytest.FixtureRequest) -> Iterator[RemoteInstance]:
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40]
    instance = RemoteInstance(container, name)
    try:
        yield instance
    finally:
        instance.teardown()


def wait_until_arrived(container: Container, instance: RemoteInstance, destination: Path,
                       files: dict[str, str], timeout: float = 60.0) -> None:
    """Wait (with a deadline) until every file of ``files`` is in ``destination`` with its content."""

    def missing() -> list[str]:
        wrong = []
        for relative_path, text in files.items():
            try:
                if (destination / relative_path).read_text() != text:
                    wrong.append(relative_path)
            except OSError:
                wrong.append(relative_path)
        return wrong

    try:
        container.wait_for(lambda: not missing(), timeout, 0.3, message=f"{sorted(files)} in {destination}")
    except TimeoutError:
        raise AssertionError(f"not mirrored to {destination}: {missing()}\n"
                             f"{journal_text(container, instance.unit)}") from None


def run_and_check(container: Container, instance: RemoteInstance, destination: Path) -> None:
    """Enable --now, add files, and check arrival, is-active and a successful batch line."""
    container.run(["systemctl", "enable", "--now", instance.unit])
    wait_until_active(container, instance.name)
    wait_until_arrived(container, instance, destination, INITIAL_FILES)

    # Changes made after start-up (READY=1 means the watches are in place).
    write_files(container, instance.source, LATER_FILES)
    wait_until_arrived(container, instance, destination, {**INITIAL_FILES, **LATER_FILES})

    active = container.run(["systemctl", "is-active", instance.unit], check=False)
    assert active.stdout.strip() == "active", f"{active.stdout}\n{journal_text(container, instance.unit)}"

    def batch_lines() -> list[dict[str, object]]:
        return [entry for entry in container.journal(instance.unit, f"PIRSYNCD_INSTANCE={instance.name}")
                if entry.get("PIRSYNCD_KIND") == "batch"]

    try:
        batches = container.wait_for(batch_lines, 30, 0.3, message=f"a batch line from {instance.unit}")
    except TimeoutError:
        raise AssertionError(f"no batch lines in the journal:\n{journal_text(container, instance.unit)}") from None
    batch = batches[-1]
    assert batch["PIRSYNCD_RSYNC_STATUS"] == "0", batch
    assert batch["PRIORITY"] == PRIORITY_INFO, batch
    assert message_of(batch), "a batch line a person can read"
    # Nothing was restarted on the way.
    assert container.unit_property(instance.unit, "NRestarts") == "0", journal_text(container, instance.unit)


def test_ssh_destination(container: Container, remote_instance: RemoteInstance) -> None:
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        pytest.skip(f"the ssh destination test needs {SSHD} and ssh-keygen on the host")
    with SshServer() as sshd:
        destination = sshd.directory / "mirror"
        destination.mkdir()
        identity = remote_instance.install_credential(sshd.identity_file, "key")
        known_hosts = remote_instance.install_credential(sshd.known_hosts, "known_hosts")
        remote_instance.configure(
            sshd.destination(f"{destination}/"),
            f"ssh_port = {sshd.port}\nssh_identity_file = {identity}\n"
            f"ssh_options = -o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null\n")
        try:
            run_and_check(container, remote_instance, destination)
        finally:
            # Stop the worker (and its ssh ControlMaster) while the server still runs.
            remote_instance.teardown()


def test_rsync_daemon_destination(container: Container, remote_instance: RemoteInstance) -> None:
    if not os.access(RSYNC, os.X_OK):
        pytest.skip(f"the rsync daemon test needs {RSYNC} on the host")
    with RsyncDaemon() as daemon:
        destination = daemon.module_path / remote_instance.name
        destination.mkdir()
        password_file = remote_instance.install_credential(daemon.password_file, "secret")
        remote_instance.configure(daemon.url(f"{remote_instance.name}/"), f"password_file = {password_file}\n")
        try:
            run_and_check(container, remote_instance, destination)
            assert daemon.connections() > 0
        finally:
            remote_instance.teardown()
