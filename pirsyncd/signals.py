"""Signals as loop events: handlers only queue the number, and a wake-up socket makes the
selectors loop return, so every signal is acted on from the loop itself."""

from __future__ import annotations

import contextlib
import signal
import socket

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)  # USR2: pause file


class SignalInbox:
    """Register ``fileno()`` for reading; after it fires, ``drain()`` returns the signals."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._received: list[int] = []
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for number in HANDLED:
            signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, frame: object) -> None:
        self._received.append(number)

    def fileno(self) -> int:
        return self._reader.fileno()

    def drain(self) -> list[int]:
        """The signals received since the last call, in order."""
        with contextlib.suppress(BlockingIOError):
            while self._reader.recv(4096):
                pass
        received, self._received = self._received, []
        return received
