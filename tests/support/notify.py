"""A stand-in for systemd's notify socket, for integration tests outside a container.

The pattern python-systemd's own tests use: bind a real ``AF_UNIX`` datagram socket in a
temporary directory, start the daemon with ``NOTIFY_SOCKET`` naming it, and read what it sends.
Each datagram is one ``sd_notify()`` call: newline-separated ``KEY=VALUE`` lines. The kernel
stamps every datagram with the sender's PID (``SO_PASSCRED``), as systemd reads it for
``NotifyAccess=main``.

    >>> with NotifySocket() as notify_socket:                                 # doctest: +SKIP
    ...     daemon = Daemon(workdir, "--source", src, "--destination", dst, notify=notify_socket)
    ...     daemon.start(wait_in_sync=False)
    ...     notify_socket.wait_for_message(lambda message: message.has("READY=1"), 30)

Nothing here blocks without a deadline: every read has a timeout.
"""

from __future__ import annotations

import dataclasses
import select
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.trees import wait_for

_MAX_DATAGRAM = 65536
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclasses.dataclass(frozen=True)
class Message:
    """One datagram: its ``KEY=VALUE`` lines, the sender's PID and when it arrived (monotonic).

    >>> message = Message.parse(b"READY=1\\nSTATUS=in sync", pid=42, received_at=0.0)
    >>> message.get("STATUS"), message.pid, message.has("READY=1")
    ('in sync', 42, True)
    """

    fields: tuple[tuple[str, str], ...]
    pid: int | None
    received_at: float

    @classmethod
    def parse(cls, data: bytes, pid: int | None, received_at: float) -> Message:
        lines = data.decode(errors="replace").split("\n")
        fields = tuple((key, value) for key, _, value in (line.partition("=") for line in lines if line))
        return cls(fields, pid, received_at)

    def get(self, key: str) -> str | None:
        """The value of the last ``key=`` line, or None."""
        values = [value for name, value in self.fields if name == key]
        return values[-1] if values else None

    def has(self, assignment: str) -> bool:
        """Whether the datagram holds the line ``assignment`` (``"WATCHDOG=1"``)."""
        key, _, value = assignment.partition("=")
        return (key, value) in self.fields

    def __str__(self) -> str:
        return f"pid {self.pid}: " + " | ".join(f"{key}={value}" for key, value in self.fields)


class NotifySocket:
    """A bound ``AF_UNIX`` ``SOCK_DGRAM`` socket collecting sd_notify datagrams into :attr:`messages`.

    The socket lives in a fresh directory under the system's temporary directory: a socket path
    is limited to 107 bytes, which pytest's per-test directories can exceed. :meth:`close` (or
    leaving the ``with`` block) removes it.
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="pirsyncd-notify-"))
        self.path = self.directory / "notify.sock"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.socket.bind(str(self.path))
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        except OSError:
            self.close()
            raise
        self.messages: list[Message] = []

    def environment(self) -> dict[str, str]:
        """What a daemon needs to find this socket: ``{"NOTIFY_SOCKET": path}``."""
        return {"NOTIFY_SOCKET": str(self.path)}

    def receive(self, timeout: float = 0.0) -> list[Message]:
        """Wait up to ``timeout`` seconds for a datagram, then read every one queued; append them to
        :attr:`messages` and return them. ``timeout=0`` only drains the queue."""
        received: list[Message] = []
        wait = timeout
        while select.select([self.socket], [], [], max(0.0, wait))[0]:
            data, ancillary, _flags, _address = self.socket.recvmsg(_MAX_DATAGRAM, socket.CMSG_SPACE(_UCRED.size))
            received.append(Message.parse(data, _sender_pid(ancillary), time.monotonic()))
            wait = 0.0
        self.messages.extend(received)
        return received

    def listen(self, seconds: float) -> list[Message]:
        """Everything that arrives within the next ``seconds``: a listening window, for checking
        that nothing does (a stopped daemon's pings). Appended to :attr:`messages` too."""
        deadline = time.monotonic() + seconds
        received: list[Message] = []
        while (remaining := deadline - time.monotonic()) > 0:
            received += self.receive(remaining)
        return received

    def wait_for_message(self, predicate: Callable[[Message], bool], timeout: float,
                         describe: Callable[[], str] = lambda: "", *, after: int = 0) -> Message:
        """The first message (in :attr:`messages` from index ``after`` on) that satisfies
        ``predicate``, reading the socket until one arrives; AssertionError after ``timeout`` s."""
        def found() -> Message | None:
            self.receive(timeout=0.05)  # returns as soon as something arrives
            return next((message for message in self.messages[after:] if predicate(message)), None)

        return wait_for(found, timeout, lambda: f"no such notify message; got:\n{self.transcript(after)}\n"
                                                f"{describe()}", poll=0.001)

    def count(self, assignment: str, messages: Iterable[Message] | None = None) -> int:
        """How many messages (of ``messages``, default all received) hold the line ``assignment``."""
        return sum(message.has(assignment) for message in (self.messages if messages is None else messages))

    def transcript(self, after: int = 0) -> str:
        """The messages received so far, one a line, for assertion messages."""
        return "\n".join(str(message) for message in self.messages[after:]) or "(none)"

    def close(self) -> None:
        self.socket.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def _sender_pid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            return int(_UCRED.unpack_from(data)[0])
    return None

