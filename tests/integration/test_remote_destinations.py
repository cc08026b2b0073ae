"""One instance, several remote destinations: a real sshd, a real rsync daemon and a local directory.

A stopped server takes only its own destination to ``retrying`` while the others keep converging
through a seeded churn, and it converges once the server is back. A wrong password takes one
destination out (``failed``, a loud line) and the others keep mirroring; when every destination is
refused the daemon exits 77. Runs on both deletion paths (``tests/integration/conftest.py``); the
stopped ssh server's churn runs with ``watch_backend = fanotify`` too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, run_pirsyncd
from tests.support.rsyncs import current
from tests.support.servers import RsyncDaemon, SshServer
from tests.support.trees import wait_for, wait_until_equal
from tests.support.workload import Workload, seed_from_environment

pytestmark = [
    pytest.mark.remote,
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd and rsync --daemon as root need root"),
    pytest.mark.skipif(not (os.path.exists("/usr/sbin/sshd") and shutil.which("rsync")),
                       reason="needs openssh-server and rsync"),
]

EX_NOPERM = 77
CONVERGE = 120.0


class RelativeLinksWorkload(Workload):
    """The seeded churn with every symlink target inside its own directory: an rsync daemon without
    chroot sanitises targets that leave the module (a leading slash, ``..``), rsync's doing, not
    pirsyncd's."""

    last_new_entry = ""

    def _new_entry_path(self) -> str:
        self.last_new_entry = super()._new_entry_path()
        return self.last_new_entry

    def _make_symlink(self) -> str:
        description = super()._make_symlink()
        path = os.path.join(self.root, self.last_new_entry)
        if os.path.islink(path) and (os.path.isabs(target := os.readlink(path)) or ".." in target.split("/")):
            os.unlink(path)
            os.symlink(os.path.basename(target) or "gone", path)
        return description


@pytest.fixture
def servers() -> Iterator[tuple[SshServer, RsyncDaemon]]:
    with SshServer() as ssh, RsyncDaemon() as rsyncd:
        yield ssh, rsyncd


def ssh_section(name: str, ssh: SshServer, mirror: Path) -> str:
    options = ssh.pirsyncd_options()
    path = current()
    flags = path.ssh_receiver_arguments() if path is not None else []
    lines = [f"[destination {name}]", f"destination = {ssh.destination(mirror)}",
             f"ssh_port = {options['ssh_port']}", f"ssh_identity_file = {options['ssh_identity_file']}",
             f"ssh_options = {options['ssh_options']}", "io_timeout = 10"]
    lines += [f"rsync_flags = {flag.split('=', 1)[1]}" for flag in flags]
    return "\n".join(lines) + "\n"


def rsyncd_section(name: str, rsyncd: RsyncDaemon, password_file: Path | None = None) -> str:
    return (f"[destination {name}]\ndestination = {rsyncd.url(name)}\n"
            f"password_file = {password_file or rsyncd.password_file}\nio_timeout = 10\n")


def write_config(tmp_path: Path, source: Path, sections: str, local: Path | None) -> Path:
    head = f"[sync]\nsource = {source}\ndelay = 0.1\nretry_max_interval = 4\n"
    if local is not None:
        head += f"destination = {local}\n"
    config = tmp_path / "farm.conf"
    config.write_text(head + sections)
    return config


def states(daemon: Daemon) -> dict[str, str]:
    return {entry["name"]: entry["state"] for entry in daemon.status().get("destinations") or []}


def wait_states(daemon: Daemon, wanted: dict[str, str], timeout: float = 60) -> None:
    def reached() -> bool:
        daemon.assert_running()
        got = states(daemon)
        return all(got.get(name) == state for name, state in wanted.items())

    wait_for(reached, timeout, lambda: f"states {wanted} not reached\n{daemon.describe()}")


def wait_equal(daemon: Daemon, workload: Workload, source: Path, name: str, mirror: Path) -> None:
    try:
        wait_until_equal(source, mirror, CONVERGE)
    except AssertionError as error:
        raise AssertionError(f"{name}: {workload.describe()}\n{error}\n{daemon.describe()}") from None


@pytest.mark.fanotify_too(stopped=("ssh",))
@pytest.mark.parametrize("stopped", ["ssh", "rsyncd"])
def test_a_stopped_server_holds_back_only_its_destination(
        stopped: str, tmp_path: Path, servers: tuple[SshServer, RsyncDaemon]) -> None:
    ssh, rsyncd = servers
    source, outside, local = tmp_path / "source", tmp_path / "outside", tmp_path / "local"
    for directory in (source, outside, local):
        directory.mkdir()
    mirrors = {"ssh": tmp_path / "ssh-mirror", "rsyncd": rsyncd.module_path / "rsyncd", "local": local}
    workload = RelativeLinksWorkload(source, seed_from_environment(13113), "mixed", outside, hard_links=False)
    workload.run(50)
    config = write_config(tmp_path, source, ssh_section("ssh", ssh, mirrors["ssh"])
                          + rsyncd_section("rsyncd", rsyncd), local)
    daemon = Daemon(tmp_path / "daemon", "--config", str(config))
    with daemon.start(wait_in_sync=False):
        wait_states(daemon, dict.fromkeys(mirrors, "in-sync"))
        for name, mirror in mirrors.items():
            wait_equal(daemon, workload, source, name, mirror)

        server = ssh if stopped == "ssh" else rsyncd
        server.stop()
        workload.run(20)
        wait_states(daemon, {name: "retrying" if name == stopped else "in-sync" for name in mirrors})
        status = daemon.status()
        assert "2 of 3 in sync" in status["status_line"] and f"{stopped}: retrying" in status["status_line"], (
            status["status_line"])
        workload.run(300)
        for name, mirror in mirrors.items():
            if name != stopped:
                wait_equal(daemon, workload, source, name, mirror)
        for name in mirrors:
            if name != stopped:
                waited = run_pirsyncd("wait", "--status-file", str(daemon.status_file), "--destination", name,
                                      "--timeout", "60")
                assert waited.returncode == 0, waited.stderr
        entry = next(entry for entry in daemon.status()["destinations"] if entry["name"] == stopped)
        assert entry["state"] == "retrying" and entry["last_error"], entry
        assert entry["pending"], entry

        server.start()
        wait_equal(daemon, workload, source, stopped, mirrors[stopped])
        daemon.wait_synced(60)
        assert daemon.status()["status_line"].startswith("3 of 3 in sync"), daemon.status()["status_line"]
        daemon.assert_running()
    assert f"{stopped}: " in daemon.log(), "the stopped destination's log lines carry its name"


def test_a_wrong_password_takes_out_only_that_destination(
        tmp_path: Path, servers: tuple[SshServer, RsyncDaemon]) -> None:
    ssh, rsyncd = servers
    source, outside, local = tmp_path / "source", tmp_path / "outside", tmp_path / "local"
    for directory in (source, outside, local):
        directory.mkdir()
    workload = RelativeLinksWorkload(source, seed_from_environment(13213), "mixed", outside, hard_links=False)
    workload.run(50)
    config = write_config(tmp_path, source, rsyncd_section("good", rsyncd)
                          + rsyncd_section("refused", rsyncd, rsyncd.wrong_password_file)
                          + ssh_section("ssh", ssh, tmp_path / "ssh-mirror"), local)
    daemon = Daemon(tmp_path / "daemon", "--config", str(config))
    with daemon.start(wait_in_sync=False):
        wait_states(daemon, {"refused": "failed", "good": "in-sync", "ssh": "in-sync", "local": "in-sync"})
        refused = next(entry for entry in daemon.status()["destinations"] if entry["name"] == "refused")
        assert refused["last_error"], refused
        loud = [line for line in daemon.log().splitlines() if "refused: taken out" in line and "password" in line]
        assert loud, daemon.log()
        workload.run(300)
        for name, mirror in (("good", rsyncd.module_path / "good"), ("ssh", tmp_path / "ssh-mirror"),
                             ("local", local)):
            wait_equal(daemon, workload, source, name, mirror)
        daemon.assert_running()
        assert states(daemon)["refused"] == "failed", daemon.describe()
        assert not (rsyncd.module_path / "refused").exists()


def test_every_destination_refused_exits_77(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "file").write_text("x\n")
    with RsyncDaemon() as rsyncd:
        config = write_config(tmp_path, source, rsyncd_section("one", rsyncd, rsyncd.wrong_password_file)
                              + rsyncd_section("two", rsyncd, rsyncd.wrong_password_file), None)
        daemon = Daemon(tmp_path / "daemon", "--config", str(config))
        daemon.start(wait_in_sync=False)
        try:
            assert daemon.wait_exit(60) == EX_NOPERM, daemon.describe()
        finally:
            daemon.stop()
    log = daemon.log()
    assert "one: " in log and "two: " in log, log
