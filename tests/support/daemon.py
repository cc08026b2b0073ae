"""Start the real pirsyncd as a subprocess for tests, and always stop it by its PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import rsyncs
from tests.support.trees import wait_for

REPO = Path(__file__).resolve().parents[2]


def pirsyncd_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "pirsyncd", *arguments]


def run_pirsyncd(*arguments: str, timeout: float = 60, env: dict[str, str] | None = None,
                 input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run pirsyncd to completion (for --check, status, wait, errors)."""
    return subprocess.run(pirsyncd_command(*arguments), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False,
                          stdin=subprocess.DEVNULL if input is None else None)


class Daemon:
    """A running ``pirsyncd`` with a status file in ``workdir``.

    Use as a context manager; ``stop()`` sends SIGTERM and waits, killing it after a
    deadline. stderr goes to ``workdir/pirsyncd.log`` so a failing test can show it.

    On a deletion path (:func:`tests.support.rsyncs.current`, set for every integration test) it
    runs with ``--deletion-mode NAME`` (unless ``arguments`` name one) and that path's rsync first
    in PATH; ``env`` may set PATH, the rsync still goes first.

    ``prefix`` goes before the command, e.g. ``['setpriv', '--reuid=65534', '--regid=65534',
    '--clear-groups', '--']`` to run it as nobody. It must exec the command, not fork it (setpriv,
    env and chroot do; sudo and runuser fork), so that the PID is the daemon's. The caller makes
    ``workdir`` writable by that user (the status file is replaced atomically inside it; the log is
    opened here and inherited) and the source readable, the destination writable; nothing here
    changes permissions.
    """

    def __init__(self, workdir: Path, *arguments: str, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None) -> None:
        self.workdir = workdir
        self.status_file = workdir / "status.json"
        self.log_file = workdir / "pirsyncd.log"
        self.prefix = list(prefix or [])
        self.deletion_path = rsyncs.current()
        self.arguments = [*arguments, "--status-file", str(self.status_file)]
        self.env = {**os.environ, **(env or {})}
        if self.deletion_path is not None:
            if not any(argument.split("=", 1)[0] == "--deletion-mode" for argument in arguments):
                self.arguments += self.deletion_path.daemon_arguments()
            self.env = self.deletion_path.environment(self.env)
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("JOURNAL_STREAM", None)
        self.env.pop("INVOCATION_ID", None)  # run as by hand, not as a systemd service
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The argv this daemon runs (prefix included)."""
        return [*self.prefix, *pirsyncd_command(*self.arguments)]

    def start(self, wait_in_sync: bool = True, timeout: float = 60) -> Daemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=REPO, stdout=log,
                                            stderr=log, stdin=subprocess.DEVNULL, env=self.env)
        if wait_in_sync:
            self.wait_state("in-sync", timeout)
        return self

    def __enter__(self) -> Daemon:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_state(self, state: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            if not self.alive():
                raise AssertionError(f"pirsyncd exited with {self.process and self.process.returncode}:\n"
                                     + self.log())
            status = self.status()
            return status if status.get("state") == state and status.get("pid") == self.pid else None

        return wait_for(reached, timeout, lambda: f"state {state!r} not reached: {self.status()}\n{self.log()}")

    def wait_synced(self, timeout: float = 60) -> None:
        """Block until every change made so far is at the destination (``pirsyncd wait``)."""
        result = run_pirsyncd("wait", "--status-file", str(self.status_file), "--timeout", str(timeout),
                              timeout=timeout + 30)
        assert result.returncode == 0, f"pirsyncd wait: {result.returncode} {result.stderr}\n{self.log()}"

    def wait_log(self, text: str, timeout: float = 30) -> None:
        wait_for(lambda: text in self.log(), timeout, lambda: f"{text!r} not logged:\n{self.log()}")

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, wait, SIGKILL after the deadline; return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

