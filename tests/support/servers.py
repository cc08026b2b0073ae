"""Real servers for remote-destination tests: ``sshd``, ``rsync --daemon`` and network namespaces.

Every server runs from its own temporary directory with its own keys, secrets and config, listens on
loopback (or on an address inside a network namespace the test created), and is stopped by PID
together with every process it forked (per-connection children included, so an outage is real even
for a client holding a multiplexed ssh connection; :mod:`tests.support.processes`). Nothing here sleeps
for a fixed time: starting waits until the port accepts connections, with a deadline.

Typical use::

    with SshServer() as sshd:
        subprocess.run(["rsync", "-a", "-e", shlex.join(sshd.ssh_command()), "src/",
                        sshd.destination("/tmp/dst/")], check=True)
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from tests.support import rsyncs
from tests.support.processes import stop_process_tree
from tests.support.trees import wait_for

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
RSYNC = rsyncs.SYSTEM_RSYNC
IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
RSYNC_DAEMON_DEFAULT_PORT = 873
START_TIMEOUT = 15.0

_PROBE_SCRIPT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0).close()
except OSError:
    sys.exit(1)
"""


# -- ports --------------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_accepts(host: str, port: int, netns: str | None = None) -> bool:
    """Whether one TCP connection to ``host:port`` succeeds now (from inside ``netns`` if given)."""
    if netns is None:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
        except OSError:
            return False
        return True
    probe = subprocess.run([IP, "netns", "exec", netns, sys.executable, "-c", _PROBE_SCRIPT, host, str(port)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=False, timeout=10)
    return probe.returncode == 0


def wait_for_port(host: str, port: int, timeout: float = START_TIMEOUT, *, netns: str | None = None,
                  process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once ``host:port`` accepts connections; raise ``TimeoutError`` after ``timeout`` seconds.

    With ``process``, fail at once (``RuntimeError``) if that process exits first.
    """
    def accepts() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before {host}:{port} opened")
        return port_accepts(host, port, netns)

    wait_for(accepts, timeout, f"{host}:{port} accepted no connection", error=TimeoutError)


# -- network namespaces -------------------------------------------------------------------------------

_namespace_counter = itertools.count()


class NetNamespaceHost:
    """Two network namespaces joined by a veth pair: a "server host" and a "client host".

    Addresses come from the benchmarking range 198.18.0.0/15 and exist only inside these namespaces;
    the host's own network is not touched. Run a server with :meth:`server_command` and the client
    (pirsyncd, rsync, ssh) with :meth:`client_command`. :meth:`down` takes the server's link down so
    that packets vanish (connections time out rather than being refused); :meth:`up` restores it.
    Both namespaces (and with them the veth pair) are deleted by :meth:`close`.
    """

    server_address = "198.18.0.2"
    client_address = "198.18.0.1"

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}-{next(_namespace_counter)}"
        self.server_ns = f"pirs-srv-{tag}"
        self.client_ns = f"pirs-cli-{tag}"
        # Interface names are limited to 15 characters; they only ever exist inside the namespaces.
        self.server_interface = "veth-srv"
        self.client_interface = "veth-cli"
        self._created: list[str] = []

    def create(self) -> None:
        """Create both namespaces, the veth pair and the addresses; bring everything up."""
        try:
            for namespace in (self.server_ns, self.client_ns):
                _run([IP, "netns", "add", namespace])
                self._created.append(namespace)
                _run([IP, "-n", namespace, "link", "set", "lo", "up"])
            _run([IP, "link", "add", self.server_interface, "netns", self.server_ns, "type", "veth",
                  "peer", "name", self.client_interface, "netns", self.client_ns])
            _run([IP, "-n", self.server_ns, "addr", "add", f"{self.server_address}/30",
                  "dev", self.server_interface])
            _run([IP, "-n", self.client_ns, "addr", "add", f"{self.client_address}/30",
                  "dev", self.client_interface])
            # Static neighbours: with the link down, packets are dropped silently (a timeout) instead
            # of failing fast on ARP ("No route to host").
            self._add_neighbour(self.client_ns, self.client_interface, self.server_address,
                                self._mac(self.server_ns, self.server_interface))
            self._add_neighbour(self.server_ns, self.server_interface, self.client_address,
                                self._mac(self.client_ns, self.client_interface))
            self.up()
            _run([IP, "-n", self.client_ns, "link", "set", self.client_interface, "up"])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Delete the namespaces this object created (the veth pair goes with them)."""
        while self._created:
            namespace = self._created.pop()
            subprocess.run([IP, "netns", "delete", namespace], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def down(self) -> None:
        """Take the server's link down: the host stops answering (no refusal, no reset)."""
        _run([IP, "-n", self.server_ns, "link", "set", self.server_interface, "down"])

    def up(self) -> None:
        """Bring the server's link back up."""
        _run([IP, "-n", self.server_ns, "link", "set", self.server_interface, "up"])

    def server_command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the server namespace (``ip netns exec`` execs it: same PID)."""
        return [IP, "netns", "exec", self.server_ns, *argv]

    def client_command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the client namespace (same PID as the ``ip`` process started)."""
        return [IP, "netns", "exec", self.client_ns, *argv]

    def server_received_bytes(self) -> int:
        """Bytes received so far by the server's interface: everything any client sent it."""
        result = _run([IP, "netns", "exec", self.server_ns, "cat",
                       f"/sys/class/net/{self.server_interface}/statistics/rx_bytes"])
        return int(result.stdout)

    @staticmethod
    def _mac(namespace: str, interface: str) -> str:
        address_file = f"/sys/class/net/{interface}/address"
        return _run([IP, "netns", "exec", namespace, "cat", address_file]).stdout.strip()

    @staticmethod
    def _add_neighbour(namespace: str, interface: str, address: str, mac: str) -> None:
        _run([IP, "-n", namespace, "neigh", "replace", address, "lladdr", mac, "dev", interface,
              "nud", "permanent"])

    def __enter__(self) -> Self:
        self.create()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with status {result.returncode}: "
                           f"{result.stderr.strip()}")
    return result


# -- servers ------------------------------------------------------------------------------------------

class _Server:
    """A server process run from its own temporary directory; stop/start keep port, keys and files."""

    name = "server"

    def __init__(self, host: str, port: int | None, default_port: int,
                 netns: NetNamespaceHost | None) -> None:
        self.netns = netns
        if netns is not None:
            self.host = netns.server_address
            self.port = port if port is not None else default_port
        else:
            self.host = host
            self.port = port if port is not None else free_port(host)
        self.directory = Path(tempfile.mkdtemp(prefix=f"pirsyncd-{self.name}-"))
        self.log_path = self.directory / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start the server (again) and return once its port accepts connections."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.name} is already running as PID {self.process.pid}")
        argv = self._command()
        if self.netns is not None:
            argv = self.netns.server_command(argv)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open while the server runs
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=self.directory)
        try:
            wait_for_port(self.host, self.port, START_TIMEOUT,
                          netns=self.netns.client_ns if self.netns else None, process=self.process)
        except BaseException as error:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {error}\n{self.log()}") from error
        self._after_start()

    def _after_start(self) -> None:
        """Called once the port accepts connections."""

    def stop(self) -> None:
        """Stop the server and every connection it serves (by PID); a no-op when not running."""
        if self.process is not None:
            stop_process_tree(self.process)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """The server's own log so far (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class SshServer(_Server):
    """A real OpenSSH server accepting one freshly generated client key for root.

    Public-key authentication only, a fresh ed25519 host key, and a ``known_hosts`` file that holds
    that host key, so a client can verify it with ``-o UserKnownHostsFile=...`` instead of trusting
    it blindly.
    """

    name = "sshd"

    def __init__(self, host: str = "127.0.0.1", port: int | None = None,
                 netns: NetNamespaceHost | None = None) -> None:
        super().__init__(host, port, 22, netns)
        self.host_key = self.directory / "ssh_host_ed25519_key"
        self.identity_file = self.directory / "id_ed25519"
        self.other_identity_file = self.directory / "id_ed25519_unauthorized"
        self.authorized_keys = self.directory / "authorized_keys"
        self.known_hosts = self.directory / "known_hosts"
        self.config_path = self.directory / "sshd_config"
        self.pid_file = self.directory / "sshd.pid"
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for key in (self.host_key, self.identity_file, self.other_identity_file):
            _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)])
        self.authorized_keys.write_text(self.identity_file.with_suffix(".pub").read_text())
        host_public_key = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts.write_text(f"{self.known_hosts_name} {host_public_key}\n")
        self.config_path.write_text("\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            # Temporary directories are not laid out the way StrictModes demands of a home.
            "StrictModes no",
            "PrintMotd no",
            "MaxStartups 100",
            "MaxSessions 100",
            "LogLevel VERBOSE",
            "",
        ]))
        self.config_path.chmod(0o600)
        _run([SSHD, "-t", "-f", str(self.config_path)])

    @property
    def known_hosts_name(self) -> str:
        """How ssh names this server in known_hosts: ``host`` on port 22, else ``[host]:port``."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def _command(self) -> list[str]:
        return [SSHD, "-D", "-e", "-f", str(self.config_path)]

    def destination(self, path: str | os.PathLike[str], user: str = "root") -> str:
        """The pirsyncd/rsync destination for ``path`` on this server: ``root@127.0.0.1:/path``."""
        return f"{user}@{self.host}:{os.fspath(path)}"

    def ssh_options(self, known_hosts: Path | None = None) -> list[str]:
        """Extra ssh options that make the client trust exactly this server's host key."""
        known_hosts = self.known_hosts if known_hosts is None else known_hosts
        return ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]

    def pirsyncd_options(self, identity_file: Path | None = None,
                         known_hosts: Path | None = None) -> dict[str, object]:
        """The pirsyncd settings (``[remote]`` keys) for reaching this server."""
        return {
            "ssh_port": self.port,
            "ssh_identity_file": str(self.identity_file if identity_file is None else identity_file),
            "ssh_options": " ".join(self.ssh_options(known_hosts)),
        }

    def pirsyncd_arguments(self, identity_file: Path | None = None,
                           known_hosts: Path | None = None) -> list[str]:
        """:meth:`pirsyncd_options` as pirsyncd command-line arguments."""
        options = self.pirsyncd_options(identity_file, known_hosts)
        return ["--ssh-port", str(options["ssh_port"]),
                "--ssh-identity-file", str(options["ssh_identity_file"]),
                f"--ssh-options={options['ssh_options']}"]

    def ssh_command(self, identity_file: Path | None = None) -> list[str]:
        """A non-interactive ssh client command for this server (e.g. for ``rsync -e``)."""
        return ["ssh", "-p", str(self.port), "-i",
                str(self.identity_file if identity_file is None else identity_file),
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
                *self.ssh_options()]


class RsyncDaemon(_Server):
    """A real ``rsync --daemon`` serving one writable module with password authentication.

    It runs ``rsync`` (default: the current deletion path's, :func:`tests.support.rsyncs.receiver_rsync`,
    as the daemon is the receiving side), chosen when it is created.
    """

    name = "rsyncd"

    def __init__(self, host: str = "127.0.0.1", port: int | None = None,
                 netns: NetNamespaceHost | None = None, module: str = "mirror",
                 user: str = "pirsync", password: str = "correct horse battery staple",
                 rsync: str | None = None) -> None:
        super().__init__(host, port, RSYNC_DAEMON_DEFAULT_PORT, netns)
        self.rsync = rsync or rsyncs.receiver_rsync()
        self.module = module
        self.user = user
        self.password = password
        self.module_path = self.directory / "module"
        self.module_path.mkdir()
        self.config_path = self.directory / "rsyncd.conf"
        self.secrets_file = self.directory / "rsyncd.secrets"
        self.password_file = self.directory / "client.password"
        self.wrong_password_file = self.directory / "client-wrong.password"
        self.transfer_log = self.directory / "rsyncd-transfers.log"
        self._connections_before_start = 0
        for path, text in ((self.secrets_file, f"{user}:{password}\n"),
                           (self.password_file, f"{password}\n"),
                           (self.wrong_password_file, "not the password\n")):
            path.write_text(text)
            path.chmod(0o600)
        self.config_path.write_text("\n".join([
            f"pid file = {self.directory / 'rsyncd.pid'}",
            "use chroot = no",
            f"log file = {self.transfer_log}",
            "",
            f"[{module}]",
            f"    path = {self.module_path}",
            "    read only = no",
            "    uid = root",
            "    gid = root",
            f"    auth users = {user}",
            f"    secrets file = {self.secrets_file}",
            "    strict modes = yes",
            # rsync munges symlinks by default without chroot; a mirror keeps their targets exact.
            "    munge symlinks = no",
            "",
        ]))

    def _command(self) -> list[str]:
        (self.directory / "rsyncd.pid").unlink(missing_ok=True)  # rsync refuses to start over a stale one
        return [self.rsync, "--daemon", "--no-detach", f"--config={self.config_path}", f"--port={self.port}",
                f"--address={self.host}"]

    def connections(self) -> int:
        """How many client connections the daemon has logged so far (``connect from`` lines)."""
        try:
            return self.transfer_log.read_text(errors="replace").count("] connect from ")
        except FileNotFoundError:
            return 0

    def start(self) -> None:
        self._connections_before_start = self.connections()
        super().start()

    def _after_start(self) -> None:
        # The readiness probe is a connection too; wait until it is logged, so that a test counting
        # connections from now on counts only its own.
        wait_for(lambda: self.connections() > self._connections_before_start, START_TIMEOUT,
                 lambda: f"{self.name} never logged the readiness probe's connection:\n{self.log()}", poll=0.02)

    def url(self, subpath: str = "", module: str | None = None) -> str:
        """``rsync://user@host[:port]/module/subpath`` (the port left out when it is 873)."""
        port = "" if self.port == RSYNC_DAEMON_DEFAULT_PORT else f":{self.port}"
        return f"rsync://{self.user}@{self.host}{port}/{module or self.module}/{subpath}"

    def double_colon(self, subpath: str = "", module: str | None = None) -> str:
        """``user@host::module/subpath``; this form has no port, see :meth:`pirsyncd_arguments`."""
        return f"{self.user}@{self.host}::{module or self.module}/{subpath}"

    def pirsyncd_arguments(self, password_file: Path | None = None, double_colon: bool = False) -> list[str]:
        """pirsyncd arguments to reach this daemon.

        The ``host::module`` form cannot carry a port, and rsync reads no environment variable for
        it on a direct daemon connection, so a non-default port goes in rsync's own ``--port``.
        """
        arguments = ["--password-file", str(self.password_file if password_file is None else password_file)]
        if double_colon and self.port != RSYNC_DAEMON_DEFAULT_PORT:
            arguments.append(f"--rsync-flags=--port={self.port}")
        return arguments

    def client_environment(self) -> dict[str, str]:
        """An environment without RSYNC_PASSWORD, so that only the password file counts."""
        return {name: value for name, value in os.environ.items() if name != "RSYNC_PASSWORD"}
