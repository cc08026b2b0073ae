"""pirsyncd against real remote destinations: a real ``sshd`` and a real ``rsync --daemon``.

The servers come from :mod:`tests.support.servers` (own host keys, authorized_keys, secrets file and
module config; loopback or network namespaces created here; stopped by PID). pirsyncd runs as the
shared harness's :class:`tests.support.daemon.Daemon` with ``--rsync-binary`` pointing at a small
wrapper that logs one line per rsync run and then execs the real rsync with its argv unchanged, so the
tests can count attempts. Every test runs on
both deletion paths (``tests/integration/conftest.py``); on the missing-args path the sending rsync
(first in PATH), the receiving one over ssh (``--rsync-path``) and the rsync daemon are the path's.
A sample runs with ``watch_backend = fanotify`` too (marked ``fanotify_too``): a mirror over ssh and
to an rsync daemon, an outage, an unreachable host recovering, a renamed directory not sent again.

Run: ``sudo .venv/bin/python -m pytest -m remote tests/integration/test_remote.py`` (needs root for
sshd and ``ip netns``).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from pirsyncd.config.destination import DestinationKind, parse_destination  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402
from tests.support.servers import NetNamespaceHost, RsyncDaemon, SshServer, free_port  # noqa: E402
from tests.support.trees import differences, wait_for, write_file  # noqa: E402
from tests.support.workload import HOSTILE_NAMES  # noqa: E402

pytestmark = [
    pytest.mark.remote,
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd, rsync --daemon as root and ip netns need root"),
    pytest.mark.skipif(not (os.path.exists("/usr/sbin/sshd") and shutil.which("rsync")),
                       reason="needs openssh-server and rsync"),
]

EX_NOPERM = 77
EX_CONFIG = 78
CONVERGE_TIMEOUT = 45.0
START_TIMEOUT = 60.0
FAILURE_EXIT_TIMEOUT = 60.0
MIB = 1024 * 1024

WRAPPER = """#!/bin/sh
# Test wrapper: one line per rsync run (time, pid, run|version), then the real rsync, argv unchanged
# (the first rsync in PATH: the harness puts the deletion path's rsync there).
kind=run
for argument in "$@"; do
    case $argument in --version|-V) kind=version ;; esac
done
echo "$(date +%s.%N) $$ $kind" >> {log}
exec rsync "$@"
"""


# -- the daemon under test ---------------------------------------------------------------------------

class Pirsyncd(Daemon):
    """The shared harness's daemon, with rsync through a wrapper that logs every run."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.attempts_log = workdir / "rsync-attempts.log"
        self.wrapper = workdir / "rsync-wrapper"
        workdir.mkdir(parents=True, exist_ok=True)
        self.wrapper.write_text(WRAPPER.format(log=self.attempts_log))
        self.wrapper.chmod(0o755)

    def start_mirroring(self, source: Path, destination: str, *extra: str,
                        netns: NetNamespaceHost | None = None) -> None:
        """Start mirroring ``source`` to ``destination`` (from inside ``netns`` when given); on the
        current deletion path the receiving rsync over ssh is that path's too."""
        self.arguments = ["--source", str(source), "--destination", destination, "--delay", "0.2",
                          "--rsync-binary", str(self.wrapper), *extra]
        if self.deletion_path is not None and parse_destination(destination).kind == DestinationKind.SSH:
            assert not any(argument.startswith("--rsync-flags") for argument in extra), extra
            self.arguments += self.deletion_path.ssh_receiver_arguments()
        self.prefix = [] if netns is None else netns.client_command([])
        self.start(wait_in_sync=False)

    def attempts(self, since: float = 0.0, until: float = math.inf) -> list[float]:
        """Start times (epoch) of the rsync runs (not ``--version`` probes) in [since, until]."""
        try:
            lines = self.attempts_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        times = [float(line.split()[0]) for line in lines if line.endswith(" run")]
        return [moment for moment in times if since <= moment <= until]


@pytest.fixture
def pirsyncd(tmp_path: Path) -> Iterator[Pirsyncd]:
    daemon = Pirsyncd(tmp_path)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source"
    path.mkdir()
    (path / "initial").mkdir()
    (path / "initial" / "a.txt").write_text("initial content\n")
    (path / "initial" / "b.bin").write_bytes(os.urandom(100_000))
    return path


@pytest.fixture
def ssh_server() -> Iterator[SshServer]:
    with SshServer() as server:
        yield server


@pytest.fixture
def rsync_daemon() -> Iterator[RsyncDaemon]:
    with RsyncDaemon() as server:
        yield server


@pytest.fixture
def netns_host() -> Iterator[NetNamespaceHost]:
    with NetNamespaceHost() as host:
        yield host


def remote_target(kind: str, ssh: SshServer | None, daemon: RsyncDaemon | None,
                  tmp_path: Path) -> tuple[str, list[str], Path]:
    """(destination string, extra pirsyncd arguments, local path where the mirror appears)."""
    if kind == "ssh":
        assert ssh is not None
        mirror = tmp_path / "mirror"
        return ssh.destination(mirror), ssh.pirsyncd_arguments(), mirror
    assert daemon is not None
    if kind == "rsync-url":
        return daemon.url("site"), daemon.pirsyncd_arguments(), daemon.module_path / "site"
    return (daemon.double_colon("site"), daemon.pirsyncd_arguments(double_colon=True),
            daemon.module_path / "site")


@pytest.fixture(params=["ssh", "rsync-url", "rsync-double-colon"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, list[str], Path]]:
    kind: str = request.param
    if kind == "ssh":
        with SshServer() as ssh:
            yield remote_target(kind, ssh, None, tmp_path)
    else:
        with RsyncDaemon() as daemon:
            yield remote_target(kind, None, daemon, tmp_path)


# -- workloads ---------------------------------------------------------------------------------------

def hostile_name_workload(source: Path) -> None:
    """Files, directories and a symlink named like options, globs, quotes and control characters."""
    for index, name in enumerate(HOSTILE_NAMES):
        write_file(source / "hostile" / name, f"file {index}: {name!r}\n")
        write_file(source / "hostile-dirs" / name / "inside", f"dir {index}\n")
    (source / "hostile" / "link to -e sh").symlink_to("-e sh")


# -- convergence -------------------------------------------------------------------------------------

@pytest.mark.fanotify_too(target=("ssh", "rsync-url"))
def test_mirror_converges_through_creates_deletes_renames_and_hostile_names(
        pirsyncd: Pirsyncd, source: Path, target: tuple[str, list[str], Path]) -> None:
    destination, arguments, mirror = target
    pirsyncd.start_mirroring(source, destination, *arguments)
    pirsyncd.wait_state("in-sync", START_TIMEOUT)
    pirsyncd.wait_mirrored(source, mirror, CONVERGE_TIMEOUT)

    for depth in range(1, 4):  # creates, nested
        for index in range(10):
            directory = source / "created" / "/".join(["deep"] * depth)
            write_file(directory / f"file-{index}.txt", f"{depth} {index}\n")
    (source / "initial" / "a.txt").write_text("modified content\n")
    pirsyncd.wait_mirrored(source, mirror, CONVERGE_TIMEOUT)

    (source / "initial" / "b.bin").unlink()  # deletes: a file and a whole tree
    shutil.rmtree(source / "created" / "deep" / "deep")
    pirsyncd.wait_mirrored(source, mirror, CONVERGE_TIMEOUT)

    (source / "initial" / "a.txt").rename(source / "initial" / "a-renamed.txt")  # renames
    (source / "created" / "deep" / "file-1.txt").rename(source / "moved-out.txt")
    (source / "created").rename(source / "created-renamed")
    (source / "moved-dir").mkdir()
    (source / "initial").rename(source / "moved-dir" / "initial")
    pirsyncd.wait_mirrored(source, mirror, CONVERGE_TIMEOUT)

    hostile_name_workload(source)
    pirsyncd.wait_mirrored(source, mirror, CONVERGE_TIMEOUT)

    for name in HOSTILE_NAMES[:8]:  # rename and delete hostile names
        (source / "hostile" / name).rename(source / "hostile" / f"{name} renamed")
        (source / "hostile-dirs" / name).rename(source / "hostile-dirs" / f"renamed {name}")
    for name in HOSTILE_NAMES[8:]:
        (source / "hostile" / name).unlink()
        shutil.rmtree(source / "hostile-dirs" / name)
    pirsyncd.wait_mirrored(source, mirror, CONVERGE_TIMEOUT)
    pirsyncd.assert_running()


# -- outages -----------------------------------------------------------------------------------------

@pytest.mark.fanotify_too(kind=("rsync-url",))
@pytest.mark.parametrize("kind", ["ssh", "rsync-url"])
def test_outage_backs_off_and_converges_after_the_server_returns(
        kind: str, pirsyncd: Pirsyncd, source: Path, tmp_path: Path) -> None:
    server: SshServer | RsyncDaemon = SshServer() if kind == "ssh" else RsyncDaemon()
    with server:
        destination, arguments, mirror = remote_target(
            kind, server if isinstance(server, SshServer) else None,
            server if isinstance(server, RsyncDaemon) else None, tmp_path)
        pirsyncd.start_mirroring(source, destination, *arguments, "--retry-max-interval", "30", "--io-timeout", "10")
        pirsyncd.wait_state("in-sync", START_TIMEOUT)
        pirsyncd.wait_mirrored(source, mirror, CONVERGE_TIMEOUT)

        counter = 0

        def write_one() -> None:
            nonlocal counter
            counter += 1
            write_file(source / "outage" / f"batch-{counter // 10}" / f"file-{counter}", f"{counter}\n" * 100)

        for _ in range(30):  # the workload is under way when the server goes away
            write_one()
        outage_start = time.time()
        server.stop()

        def retried_enough() -> bool:
            write_one()  # keep writing all through the outage: every write is a reason to try again
            pirsyncd.assert_running()
            return len(pirsyncd.attempts(since=outage_start)) >= 4

        wait_for(retried_enough, 60, lambda: f"fewer than 4 rsync attempts during the outage\n"
                                             f"{pirsyncd.describe()}", poll=0.05)
        status = pirsyncd.status()
        assert status.get("state") == "retrying", pirsyncd.describe()
        assert isinstance(status.get("next_retry"), (int, float)) and status["next_retry"] > outage_start, (
            pirsyncd.describe())
        assert status.get("last_error"), pirsyncd.describe()
        outage_end = time.time()
        server.start()
        for _ in range(5):  # and after it
            write_one()
        pirsyncd.wait_mirrored(source, mirror, timeout=CONVERGE_TIMEOUT + 30)
        pirsyncd.wait_state("in-sync", START_TIMEOUT)

    attempts = pirsyncd.attempts(since=outage_start, until=outage_end)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    outage_seconds = outage_end - outage_start
    # Waits doubling from 1 s allow about log2(outage) tries; a tight loop makes hundreds.
    allowed = math.ceil(math.log2(outage_seconds + 1)) + 3
    report = (f"{len(attempts)} attempts in {outage_seconds:.1f} s, gaps {[round(gap, 2) for gap in gaps]}\n"
              f"{pirsyncd.describe()}")
    assert 2 <= len(attempts) <= allowed, report
    assert min(gaps) >= 0.5, report
    # It backs off: the waits grow (the first gap may include a run cut short by the outage).
    assert max(gaps) >= 1.8 * min(gaps), report
    assert gaps[-1] >= 0.9 * max(gaps[:-1]), report


# -- failures a user can cause ----------------------------------------------------------------------

def assert_failure(pirsyncd: Pirsyncd, expected_status: int, *patterns: str) -> str:
    """pirsyncd exits with ``expected_status`` and one stderr line matches every regex in ``patterns``."""
    status = pirsyncd.wait_exit(FAILURE_EXIT_TIMEOUT)
    assert status == expected_status, f"expected exit status {expected_status}\n{pirsyncd.describe()}"
    for line in pirsyncd.log().splitlines():
        if all(re.search(pattern, line, re.IGNORECASE) for pattern in patterns):
            return line
    raise AssertionError(f"no stderr line matches all of {patterns}\n{pirsyncd.describe()}")


def assert_not_retried_in_a_loop(pirsyncd: Pirsyncd) -> None:
    attempts = pirsyncd.attempts()
    assert len(attempts) <= 2, f"{len(attempts)} rsync runs for a failure that a retry cannot fix\n" + (
        pirsyncd.describe())


def test_unknown_host_key_is_refused_naming_the_known_hosts_file(
        pirsyncd: Pirsyncd, source: Path, ssh_server: SshServer, tmp_path: Path) -> None:
    empty_known_hosts = tmp_path / "ssh" / "known_hosts"
    empty_known_hosts.parent.mkdir()
    empty_known_hosts.touch()
    pirsyncd.start_mirroring(source, ssh_server.destination(tmp_path / "mirror"),
                   *ssh_server.pirsyncd_arguments(known_hosts=empty_known_hosts))
    assert_failure(pirsyncd, EX_NOPERM, r"host key", re.escape(str(empty_known_hosts)))
    assert_not_retried_in_a_loop(pirsyncd)
    assert not (tmp_path / "mirror").exists()
    assert empty_known_hosts.read_text() == "", "the unknown host key was accepted silently"


def test_rejected_ssh_key_is_an_authentication_error(
        pirsyncd: Pirsyncd, source: Path, ssh_server: SshServer, tmp_path: Path) -> None:
    pirsyncd.start_mirroring(source, ssh_server.destination(tmp_path / "mirror"),
                   *ssh_server.pirsyncd_arguments(identity_file=ssh_server.other_identity_file))
    assert_failure(pirsyncd, EX_NOPERM, r"key", r"denied|rejected|refused|not accepted")
    assert_not_retried_in_a_loop(pirsyncd)
    assert "Failed publickey" in ssh_server.log() or "Connection closed by authenticating user" in (
        ssh_server.log()), "the server never saw the attempt"


def test_wrong_password_is_an_authentication_error(
        pirsyncd: Pirsyncd, source: Path, rsync_daemon: RsyncDaemon) -> None:
    pirsyncd.start_mirroring(source, rsync_daemon.url("site"),
                   *rsync_daemon.pirsyncd_arguments(password_file=rsync_daemon.wrong_password_file))
    assert_failure(pirsyncd, EX_NOPERM, r"password", r"auth|wrong|rejected|denied|refused")
    assert_not_retried_in_a_loop(pirsyncd)
    assert not (rsync_daemon.module_path / "site").exists()


def test_password_file_readable_by_others_is_refused_before_connecting(
        pirsyncd: Pirsyncd, source: Path, rsync_daemon: RsyncDaemon) -> None:
    rsync_daemon.password_file.chmod(0o644)
    connections_before = rsync_daemon.connections()
    pirsyncd.start_mirroring(source, rsync_daemon.url("site"), *rsync_daemon.pirsyncd_arguments())
    assert_failure(pirsyncd, EX_CONFIG, re.escape(str(rsync_daemon.password_file)),
                   r"readable|mode|permission|others|0?600|chmod")
    assert pirsyncd.attempts() == [], "rsync ran although the password file was refused"
    assert rsync_daemon.connections() == connections_before, (
        f"the daemon was contacted:\n{rsync_daemon.transfer_log.read_text()}")


def test_missing_module_is_a_configuration_error(
        pirsyncd: Pirsyncd, source: Path, rsync_daemon: RsyncDaemon) -> None:
    pirsyncd.start_mirroring(source, rsync_daemon.url("site", module="nosuchmodule"),
                   *rsync_daemon.pirsyncd_arguments())
    assert_failure(pirsyncd, EX_CONFIG, r"module", r"nosuchmodule")
    assert_not_retried_in_a_loop(pirsyncd)


def test_refused_connection_keeps_running_and_retries(
        pirsyncd: Pirsyncd, source: Path, rsync_daemon: RsyncDaemon) -> None:
    closed_port = free_port()
    pirsyncd.start_mirroring(source, f"rsync://{rsync_daemon.user}@127.0.0.1:{closed_port}/{rsync_daemon.module}/site",
                   *rsync_daemon.pirsyncd_arguments())
    status = pirsyncd.wait_state("retrying", START_TIMEOUT)
    assert isinstance(status.get("next_retry"), (int, float)), pirsyncd.describe()
    assert status["next_retry"] >= status["updated"] - 1, pirsyncd.describe()
    assert status.get("last_error"), pirsyncd.describe()
    pirsyncd.assert_running()


@pytest.mark.fanotify_too
def test_unreachable_host_times_out_keeps_running_and_recovers(
        pirsyncd: Pirsyncd, source: Path, netns_host: NetNamespaceHost, tmp_path: Path) -> None:
    with SshServer(netns=netns_host) as ssh:
        netns_host.down()  # packets vanish: a timeout, not a refusal
        mirror = tmp_path / "mirror"
        pirsyncd.start_mirroring(source, ssh.destination(mirror), *ssh.pirsyncd_arguments(), "--io-timeout", "3",
                       "--retry-max-interval", "5", netns=netns_host)
        status = pirsyncd.wait_state("retrying", 90)
        assert isinstance(status.get("next_retry"), (int, float)), pirsyncd.describe()
        assert status["next_retry"] >= status["updated"] - 1, pirsyncd.describe()
        assert status.get("last_error"), pirsyncd.describe()
        assert not mirror.exists()
        pirsyncd.assert_running()

        netns_host.up()
        write_file(source / "written-while-down", "pending\n")
        pirsyncd.wait_mirrored(source, mirror, timeout=CONVERGE_TIMEOUT + 30)


# -- moves without re-transfer -----------------------------------------------------------------------

@pytest.mark.fanotify_too
def test_renamed_directory_is_not_sent_again_over_ssh(
        pirsyncd: Pirsyncd, tmp_path: Path, netns_host: NetNamespaceHost) -> None:
    """Renaming a 50 MiB directory sends < 1% of its bytes, counted on the server's network interface."""
    source = tmp_path / "source"
    big = source / "big"
    big.mkdir(parents=True)
    for index in range(50):
        (big / f"chunk-{index:02d}.bin").write_bytes(os.urandom(MIB))
    mirror = tmp_path / "mirror"
    with SshServer(netns=netns_host) as ssh:
        pirsyncd.start_mirroring(source, ssh.destination(mirror), *ssh.pirsyncd_arguments(), netns=netns_host)
        pirsyncd.wait_mirrored(source, mirror, timeout=120)
        pirsyncd.wait_state("in-sync", START_TIMEOUT)
        received_before = netns_host.server_received_bytes()
        sequence_before = pirsyncd.status().get("synced_seq")

        big.rename(source / "big-renamed")
        pirsyncd.wait_mirrored(source, mirror, timeout=120)
        wait_for(lambda: pirsyncd.status().get("state") == "in-sync"
                 and pirsyncd.status().get("synced_seq") != sequence_before,
                 START_TIMEOUT, lambda: f"not in sync after the rename\n{pirsyncd.describe()}")
        received = netns_host.server_received_bytes() - received_before

    limit = 50 * MIB // 100
    assert received < limit, f"{received} bytes reached the server for a rename (limit {limit})\n" + (
        pirsyncd.describe())
    last_sync = pirsyncd.status().get("last_sync") or {}
    assert last_sync.get("bytes_sent", 0) < limit, pirsyncd.describe()
    assert differences(source, mirror) == []
