"""The one way pirsyncd starts a subprocess (rsync, the probe, a listing, a tree scan,
ssh): an argv list, input fed on stdin without blocking, output collected, the exit
learnt through a pidfd, so the main loop services every child with select.

    >>> child = Child(["true"], b"", "example")
    >>> child.wait(5.0).status
    0

A step that wants a child asks for a Command (a plain value) and is later handed the
ChildResult; only the edge turns the Command into a running Child (``start_child``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")  # util-linux, always in Debian
# Under systemd the unit's cgroup is killed with the daemon (KillMode=mixed), so the
# parent-death signal and its cost (setpriv: about 0.8 ms per child) are only needed by hand.
_NEEDS_DEATH_SIGNAL = not os.environ.get("INVOCATION_ID")
_OUTPUT_LIMIT = 256 * 1024
_STDERR_LIMIT = 1 << 20  # kept whole for reading the failed paths; past it the head is dropped
_STDERR_TAIL = 4096


def _die_with_parent() -> None:
    """In the child before exec, where setpriv is missing: SIGKILL when pirsyncd dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class Command:
    """A child to start: its argv, what to feed it on stdin, and a label for the journal.

    >>> Command(["rsync", "--version"], b"", "rsync version").label
    'rsync version'
    """

    argv: list[str]
    stdin: bytes
    label: str
    env: tuple[tuple[str, str], ...] = ()  # set over the daemon's environment (LC_ALL=C for parsed output)


@dataclasses.dataclass(frozen=True)
class ChildResult:
    """How a child ended: exit status (negative: killed by that signal) and its output."""

    status: int
    stdout: bytes
    stderr: str
    stderr_truncated: bool
    seconds: float
    stopped_for: str | None  # why we stopped it, if we did

    @property
    def stderr_tail(self) -> str:
        return self.stderr.strip()[-_STDERR_TAIL:]


class Child:
    """A started subprocess. The loop registers ``exit_fd``, ``stdout``, ``stderr`` and,
    while ``stdin_pending``, ``stdin`` with its selector and calls the ``on_*`` methods;
    once ``exit_fd`` is readable, ``finish()`` reaps it."""

    def __init__(self, argv: list[str], stdin_data: bytes, label: str, env: dict[str, str] | None = None,
                 output_limit: int = _OUTPUT_LIMIT) -> None:
        self.argv = argv
        self.output_limit = output_limit  # bytes of stdout kept (its tail; stdout_truncated: more came)
        self.label = label
        self.started_at = time.monotonic()
        # A child must die with pirsyncd, even by SIGKILL, so no orphan rsync keeps writing to
        # the destination while a restarted daemon syncs it: setpriv sets the parent-death signal
        # and lets Popen use vfork; a preexec_fn would force a slow fork of the whole daemon.
        prefix = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV and _NEEDS_DEATH_SIGNAL else []
        self.process = subprocess.Popen(
            prefix + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            close_fds=True, start_new_session=True, env=env,  # our signals are ours; we stop children ourselves
            preexec_fn=_die_with_parent if _NEEDS_DEATH_SIGNAL and not _SETPRIV else None)
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self.stdin = self.process.stdin
        self.stdout = self.process.stdout
        self.stderr = self.process.stderr
        for stream in (self.stdin, self.stdout, self.stderr):
            os.set_blocking(stream.fileno(), False)
        self.exit_fd = os.pidfd_open(self.process.pid)
        self._stdin_data = memoryview(stdin_data)
        self._stdout_text = bytearray()
        self._stderr_text = bytearray()
        self._stderr_truncated = False
        self.stdout_truncated = False
        # Sees each chunk of stdout as it is read (b"" at its end) and returns what to keep of it:
        # a reader of rsync's progress lines takes them out, the rest is kept as output.
        self.stdout_sink: Callable[[bytes], bytes] | None = None
        self.stopped_for: str | None = None
        self.stopped_at = 0.0
        if stdin_data:
            self.on_stdin_writable()  # most lists fit the pipe: written now, not a loop turn later
        else:
            self._close_stdin()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdin_pending(self) -> bool:
        return not self.stdin.closed

    def on_stdin_writable(self) -> None:
        try:
            written = os.write(self.stdin.fileno(), self._stdin_data[:65536])
        except BlockingIOError:
            return
        except BrokenPipeError:
            self._close_stdin()
            return
        self._stdin_data = self._stdin_data[written:]
        if not self._stdin_data:
            self._close_stdin()

    def _close_stdin(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.stdin.close()

    def read_stdout(self) -> bytes | None:
        """Read what is there: b"" at the end, None when nothing is there yet."""
        try:
            data = os.read(self.stdout.fileno(), 65536)
        except BlockingIOError:
            return None
        kept = data if self.stdout_sink is None else self.stdout_sink(data)
        self._stdout_text += kept
        if len(self._stdout_text) > self.output_limit:
            del self._stdout_text[:len(self._stdout_text) - self.output_limit]
            self.stdout_truncated = True
        return data

    def read_stderr(self) -> bytes | None:
        before = len(self._stderr_text)
        data = _read(self.stderr.fileno(), self._stderr_text, _STDERR_LIMIT)
        if data and len(self._stderr_text) < before + len(data):
            self._stderr_truncated = True
        return data

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def stop(self, reason: str) -> None:
        """Ask the child to stop (SIGTERM to its process group); ``kill()`` if it does not."""
        if self.stopped_for is None:
            self.stopped_for = reason
            self.stopped_at = time.monotonic()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def finish(self) -> ChildResult:
        """Reap the child (it has exited), drain its output and say how it ended."""
        status = self.process.wait()
        while self.read_stdout():
            pass
        self.stdout.close()
        while self.read_stderr():
            pass
        self.stderr.close()
        if not self.stdin.closed:
            self._close_stdin()
        os.close(self.exit_fd)
        return ChildResult(status, bytes(self._stdout_text), self._stderr_text.decode(errors="surrogateescape"),
                           self._stderr_truncated, self.elapsed(), self.stopped_for)

    def wait(self, timeout: float) -> ChildResult:
        """Service the child until it exits, for use outside the loop (at shutdown, in tests);
        stopped, then killed, past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            readers = [self.exit_fd] + [stream for stream in (self.stdout, self.stderr) if not stream.closed]
            writers = [self.stdin] if self.stdin_pending else []
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop("time limit") if self.stopped_for is None else self.kill()
                deadline = time.monotonic() + 2.0
                remaining = 2.0
            readable, writable, _ = select.select(readers, writers, [], remaining)
            if writable:
                self.on_stdin_writable()
            if self.stdout in readable:
                self.read_stdout()
            if self.stderr in readable:
                self.read_stderr()
            if self.exit_fd in readable:
                return self.finish()


def start_child(command: Command) -> Child:
    """Start what a step asked for (``command.env`` set over the daemon's environment)."""
    return Child(command.argv, command.stdin, command.label, env={**os.environ, **dict(command.env)} if command.env
                 else None)


def _read(fileno: int, buffer: bytearray, limit: int) -> bytes | None:
    try:
        data = os.read(fileno, 65536)
    except BlockingIOError:
        return None
    buffer += data
    if len(buffer) > limit:
        del buffer[:len(buffer) - limit]
    return data
