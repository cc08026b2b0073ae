"""One running rsync: started with an argv list, fed its path list on stdin without
blocking, watched through a pidfd so the main loop learns of its exit by select."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time

_PR_SET_PDEATHSIG = 1
_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")  # util-linux, always in Debian
# Under systemd the unit's cgroup is killed with the daemon (KillMode=mixed), so the
# parent-death signal and its cost (setpriv: about 0.8 ms per run) are only needed by hand.
_NEEDS_DEATH_SIGNAL = not os.environ.get("INVOCATION_ID")
_OUTPUT_LIMIT = 256 * 1024
_STDERR_TAIL = 4096
_STDERR_LIMIT = 1 << 20  # kept whole for reading the failed paths; past it the head is dropped


def _die_with_parent() -> None:
    """In the child before exec, where setpriv is missing: SIGKILL when pirsyncd dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class RsyncRun:
    """A started rsync. The loop registers ``exit_fd``, ``stdout``, ``stderr`` and,
    while ``stdin_pending``, ``stdin`` with its selector and calls the ``on_*`` methods."""

    def __init__(self, argv: list[str], stdin_data: bytes, label: str) -> None:
        self.argv = argv
        self.label = label
        self.started_at = time.monotonic()
        # rsync must die with pirsyncd, even by SIGKILL, so no orphan keeps writing to the
        # destination while a restarted daemon syncs it: setpriv sets the parent-death signal
        # and lets Popen use vfork; a preexec_fn would force a slow fork of the whole daemon.
        prefix = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV and _NEEDS_DEATH_SIGNAL else []
        self.process = subprocess.Popen(
            prefix + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            close_fds=True, start_new_session=True,  # our signals are ours; we stop rsync ourselves
            preexec_fn=_die_with_parent if _NEEDS_DEATH_SIGNAL and not _SETPRIV else None)
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self.stdin = self.process.stdin
        self.stdout = self.process.stdout
        self.stderr = self.process.stderr
        for stream in (self.stdin, self.stdout, self.stderr):
            os.set_blocking(stream.fileno(), False)
        self.exit_fd = os.pidfd_open(self.process.pid)
        self._stdin_data = memoryview(stdin_data)
        self.stdout_text = bytearray()
        self.stderr_text = bytearray()
        self.stderr_truncated = False
        self.killed_for: str | None = None
        self.stopped_at = 0.0
        if not stdin_data:
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

    def read_stdout(self) -> bytes:
        return self._read(self.stdout, self.stdout_text, _OUTPUT_LIMIT)

    def read_stderr(self) -> bytes:
        before = len(self.stderr_text)
        data = self._read(self.stderr, self.stderr_text, _STDERR_LIMIT)
        if len(self.stderr_text) < before + len(data):
            self.stderr_truncated = True
        return data

    @staticmethod
    def _read(stream: object, buffer: bytearray, limit: int) -> bytes:
        fileno = stream.fileno()  # type: ignore[attr-defined]
        try:
            data = os.read(fileno, 65536)
        except BlockingIOError:
            return b""
        buffer += data
        if len(buffer) > limit:
            del buffer[:len(buffer) - limit]
        return data

    def stderr_whole(self) -> str:
        return self.stderr_text.decode(errors="surrogateescape")

    def stderr_tail(self) -> str:
        return self.stderr_text.decode(errors="replace").strip()[-_STDERR_TAIL:]

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def stop(self, reason: str) -> None:
        """Ask rsync to stop (SIGTERM); ``kill()`` if it does not."""
        self.killed_for = reason
        self.stopped_at = time.monotonic()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)

    def finish(self) -> int:
        """Reap rsync (it has exited), drain its output and return its exit status."""
        status = self.process.wait()
        while self._read(self.stdout, self.stdout_text, _OUTPUT_LIMIT):
            pass
        self.stdout.close()
        while self.read_stderr():
            pass
        self.stderr.close()
        if not self.stdin.closed:
            self._close_stdin()
        os.close(self.exit_fd)
        return status
