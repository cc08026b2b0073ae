"""The two contenders, started the same way: a fresh run directory, the logging rsync wrapper as
their rsync binary, foreground, stopped with SIGTERM by PID.

Command building is pure (``pirsyncd_command``, ``lsyncd_config``); ``start_daemon`` is the only
place that starts a process. The pieces the test harness has too come from it (``tests.support``):
the pirsyncd argv, reading the status file, waiting with a deadline, stopping by PID.
"""

from __future__ import annotations

import compileall
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time

from bench import measure
from tests.support import daemon as harness
from tests.support.daemon import read_status_file
from tests.support.processes import stop_process
from tests.support.trees import wait_for

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The checkout's own virtualenv; a worktree without one runs with the Python running the bench.
VENV_PYTHON = os.path.join(REPO_ROOT, ".venv", "bin", "python")
if not os.access(VENV_PYTHON, os.X_OK):
    VENV_PYTHON = sys.executable
LSYNCD = "/usr/bin/lsyncd"
SYSTEM_RSYNC = "/usr/bin/rsync"
DAEMON_NAMES = ("pirsyncd", "lsyncd")


@dataclasses.dataclass(frozen=True)
class SshTarget:
    """A loopback sshd the benchmark started (see bench/sshd.py)."""

    user: str
    host: str
    port: int
    identity_file: str
    known_hosts_file: str

    @property
    def options(self) -> dict[str, str]:
        return {"UserKnownHostsFile": self.known_hosts_file, "StrictHostKeyChecking": "yes",
                "BatchMode": "yes", "IdentitiesOnly": "yes"}


@dataclasses.dataclass(frozen=True)
class Setup:
    """One daemon run: where things are and how it is configured."""

    run_dir: str
    source: str
    destination_path: str  # the destination as a local path, also for ssh (loopback)
    wrapper: str
    rsync_log: str
    status_file: str
    delay: float
    ssh: SshTarget | None = None
    # The rsync the wrapper runs (its $BENCH_REAL_RSYNC) and extra pirsyncd arguments (W6 runs
    # pirsyncd with --deletion-mode and, for missing-args, a fixed rsync).
    real_rsync: str = SYSTEM_RSYNC
    pirsyncd_arguments: tuple[str, ...] = ()

    @property
    def destination(self) -> str:
        if self.ssh is None:
            return self.destination_path
        return f"{self.ssh.user}@{self.ssh.host}:{self.destination_path}"


def pirsyncd_command(setup: Setup) -> list[str]:
    """The pirsyncd argv, e.g. ``python -m pirsyncd --source S --destination D --delay 0
    --rsync-binary W --status-file F``."""
    argv = harness.pirsyncd_command("--source", setup.source, "--destination", setup.destination,
                                    "--delay", format_seconds(setup.delay), "--rsync-binary", setup.wrapper,
                                    "--status-file", setup.status_file, python=VENV_PYTHON)
    if setup.ssh is not None:
        ssh_options = " ".join(f"-o {key}={value}" for key, value in setup.ssh.options.items())
        argv += ["--ssh-port", str(setup.ssh.port), "--ssh-identity-file", setup.ssh.identity_file,
                 "--ssh-options", ssh_options]
    return argv + list(setup.pirsyncd_arguments)


def lsyncd_config(setup: Setup) -> str:
    """The Lua config: default.rsync (local) or default.rsyncssh, lsyncd's defaults otherwise.

    >>> print(lsyncd_config(Setup("/r", "/r/src", "/r/dst", "/r/w", "/r/w.log", "", 0)).splitlines()[3])
    sync { default.rsync, source = "/r/src/", target = "/r/dst/", delay = 0,
    """
    lines = ["settings {", f"    logfile = {lua_string(os.path.join(setup.run_dir, 'lsyncd.log'))},", "}"]
    rsync_table = f"rsync = {{ binary = {lua_string(setup.wrapper)} }}"
    if setup.ssh is None:
        lines.append(f"sync {{ default.rsync, source = {lua_string(setup.source + '/')}, "
                     f"target = {lua_string(setup.destination_path + '/')}, "
                     f"delay = {format_seconds(setup.delay)},")
        lines.append(f"    {rsync_table} }}")
    else:
        options = ", ".join(f"{key} = {lua_string(value)}" for key, value in setup.ssh.options.items())
        lines.append(f"sync {{ default.rsyncssh, source = {lua_string(setup.source + '/')}, "
                     f"host = {lua_string(setup.ssh.user + '@' + setup.ssh.host)}, "
                     f"targetdir = {lua_string(setup.destination_path + '/')}, "
                     f"delay = {format_seconds(setup.delay)},")
        lines.append(f"    {rsync_table},")
        identity = lua_string(setup.ssh.identity_file)
        lines.append(f"    ssh = {{ port = {setup.ssh.port}, identityFile = {identity},"
                     f" options = {{ {options} }} }} }}")
    return "\n".join(lines) + "\n"


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


class DaemonNotReady(RuntimeError):
    """The daemon exited or did not report a synced mirror in time."""


class RunningDaemon:
    """A started daemon: its process, when it started and how to tell it is ready."""

    def __init__(self, name: str, setup: Setup, argv: list[str]) -> None:
        self.name = name
        self.setup = setup
        self.output_path = os.path.join(setup.run_dir, f"{name}.out")
        with open(self.output_path, "wb") as output:
            self.started_at = time.time()
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output,
                                            stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                            env={**os.environ, "BENCH_REAL_RSYNC": setup.real_rsync})
        self.pid = self.process.pid

    def output_tail(self, size: int = 2000) -> str:
        with open(self.output_path, "rb") as output:
            return output.read()[-size:].decode(errors="replace")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DaemonNotReady(f"{self.name} exited with status {self.process.returncode}:\n"
                                 f"{self.output_tail()}")

    def wait_ready(self, timeout: float) -> float:
        """Wait until the daemon says the initial mirror is done; return that moment (epoch).

        pirsyncd: the status file's ``updated`` when it first shows state ``in-sync``.
        lsyncd: the end of its first successful rsync run (the startup sync), from the wrapper log;
        lsyncd adds its watches before that run, so it is watching by then.
        """
        def ready_at() -> float | None:
            self.check_alive()
            if self.name == "pirsyncd":
                status = read_status_file(self.setup.status_file)
                return float(status.get("updated") or time.time()) if status.get("state") == "in-sync" else None
            runs = [run for run in measure.read_rsync_log(self.setup.rsync_log).finished if run.status == 0]
            return min(run.end for run in runs) if runs else None

        return wait_for(ready_at, timeout, lambda: f"{self.name} not in sync:\n{self.output_tail()}", poll=0.005,
                        error=DaemonNotReady)

    def probe(self, name: str, timeout: float) -> float:
        """Write a small file into the source and return seconds until it is at the destination."""
        content = os.urandom(64)
        with open(os.path.join(self.setup.source, name), "wb") as probe_file:
            probe_file.write(content)
        written_at = time.time()
        target = os.path.join(self.setup.destination_path, name)

        def arrived_after() -> float | None:
            try:
                if measure.read_bytes(target) == content:
                    return time.time() - written_at
            except FileNotFoundError:
                pass
            self.check_alive()
            return None

        return wait_for(arrived_after, timeout, lambda: f"{self.name}: probe {name} not mirrored:\n"
                                                        f"{self.output_tail()}", poll=0.002, error=DaemonNotReady)

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM by PID, then wait; if it does not stop, it and its children are killed by PID.
        Waits for the rsync runs it left behind (wrapper PIDs) too."""
        returncode = stop_process(self.process, timeout)
        with contextlib.suppress(DaemonNotReady):
            wait_for(lambda: not measure.read_rsync_log(self.setup.rsync_log).running_pids, 30,
                     "rsync runs still going", error=DaemonNotReady)
        for wrapper_pid in measure.read_rsync_log(self.setup.rsync_log).running_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(wrapper_pid, signal.SIGTERM)
        return returncode


def start_daemon(name: str, setup: Setup) -> RunningDaemon:
    if name == "pirsyncd":
        return RunningDaemon(name, setup, pirsyncd_command(setup))
    config_path = os.path.join(setup.run_dir, "lsyncd.lua")
    with open(config_path, "w", encoding="utf-8") as config_file:
        config_file.write(lsyncd_config(setup))
    return RunningDaemon(name, setup, [LSYNCD, "-nodaemon", config_path])


def byte_compile_pirsyncd() -> bool:
    """Write pirsyncd/__pycache__ as the Debian package's py3compile does at install, so the
    daemon does not compile its modules at every start (PYTHONDONTWRITEBYTECODE=1 in a
    checkout): about 45 ms of its start, 1.1 MiB of RSS after the imports, 0.4 MiB of W3's peak
    (issue 16). True when done.
    The files are checked against the sources' mtimes, so an edit during a run is still seen."""
    return bool(compileall.compile_dir(os.path.join(REPO_ROOT, "pirsyncd"), quiet=1))


def pirsyncd_available() -> str | None:
    """None when ``python -m pirsyncd --help`` works (its modules byte-compiled first), else why not."""
    byte_compile_pirsyncd()
    result = subprocess.run(harness.pirsyncd_command("--help", python=VENV_PYTHON), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode == 0:
        return None
    return (result.stderr or result.stdout).strip().splitlines()[-1:][0] if (result.stderr or result.stdout) \
        else f"exit status {result.returncode}"
