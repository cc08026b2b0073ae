"""A throwaway sshd on a loopback port, with its own host key and a client key, for the ssh
variants. Started and stopped by PID; nothing outside its directory is touched except that
/run/sshd (sshd's privilege-separation directory) is created when missing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from bench.daemons import SshTarget

SSHD = "/usr/sbin/sshd"


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LoopbackSshd:
    """``with LoopbackSshd(directory) as target:`` yields an :class:`SshTarget` for root@127.0.0.1."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SshTarget:
        os.makedirs(self.directory, exist_ok=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        host_key = os.path.join(self.directory, "host_ed25519")
        client_key = os.path.join(self.directory, "client_ed25519")
        for key in (host_key, client_key):
            if not os.path.exists(key):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        port = free_loopback_port()
        authorized_keys = os.path.join(self.directory, "authorized_keys")
        with open(client_key + ".pub", encoding="ascii") as public, \
                open(authorized_keys, "w", encoding="ascii") as authorized:
            authorized.write(public.read())
        known_hosts = os.path.join(self.directory, "known_hosts")
        with open(host_key + ".pub", encoding="ascii") as public, \
                open(known_hosts, "w", encoding="ascii") as known:
            key_type, key_data = public.read().split()[:2]
            known.write(f"[127.0.0.1]:{port} {key_type} {key_data}\n")
        config = os.path.join(self.directory, "sshd_config")
        with open(config, "w", encoding="ascii") as config_file:
            config_file.write("\n".join([
                f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized_keys}", "PermitRootLogin prohibit-password",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
                "StrictModes no", f"PidFile {os.path.join(self.directory, 'sshd.pid')}",
                "LogLevel ERROR", "MaxStartups 100:30:200", "MaxSessions 100",
                "Subsystem sftp internal-sftp", ""]))
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", config],
                                        stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(self.directory, "sshd.log"), "wb"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with status {self.process.returncode}; "
                                   f"see {self.directory}/sshd.log")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        target = SshTarget("root", "127.0.0.1", port, client_key, known_hosts)
        options = [item for key, value in target.options.items() for item in ("-o", f"{key}={value}")]
        subprocess.run(["ssh", "-p", str(port), "-i", client_key, *options, "root@127.0.0.1", "true"],
                       check=True, timeout=20)
        return target

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
