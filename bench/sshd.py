"""The loopback sshd of the ssh variants: the test harness's :class:`tests.support.servers.SshServer`
(its own host key, client key and known_hosts in a temporary directory; stopped by PID with every
connection it serves), seen by the benchmark as an :class:`SshTarget` for root@127.0.0.1."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from bench.daemons import SshTarget
from tests.support.servers import SshServer


@contextlib.contextmanager
def loopback_sshd() -> Iterator[SshTarget]:
    """``with loopback_sshd() as target:`` a running sshd that accepted one login already."""
    with SshServer() as server:
        target = SshTarget("root", server.host, server.port, str(server.identity_file), str(server.known_hosts))
        options = [item for key, value in target.options.items() for item in ("-o", f"{key}={value}")]
        subprocess.run(["ssh", "-p", str(target.port), "-i", target.identity_file, *options,
                        f"{target.user}@{target.host}", "true"], check=True, timeout=20, stdin=subprocess.DEVNULL)
        yield target
