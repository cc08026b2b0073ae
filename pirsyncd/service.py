"""The daemon's loop: one selectors loop over inotify, signals and the running children,
with the earliest deadline of one table as its timeout. What happens on each event is
the Instance's business; the loop only waits and dispatches.

    signals ─┐
    inotify ─┼─> select(timeout = earliest deadline in Instance.deadlines())
    children ┘        ├─> the callback registered for that file (a partial, never a string)
                      ├─> Instance.on_timer for each deadline due
                      └─> Instance.start_jobs, Instance.check_stopped, Instance.publish

The loop is the only thread; the watchdog is pinged from it (a timer like any other),
so a wedged loop stops pinging and systemd restarts it.
"""

from __future__ import annotations

import functools
import selectors
import time
from collections.abc import Callable
from typing import IO, Any

from pirsyncd.config.parse import Config
from pirsyncd.edges.notify import NotifyError
from pirsyncd.edges.runner import Child, ChildResult
from pirsyncd.edges.signals import SignalInbox
from pirsyncd.instance import Instance


class Service:
    """The process: one Instance and the selectors loop that serves it (its watches, its
    children, signals through a wake-up pipe, the deadline table) until it has an exit status."""

    def __init__(self, config: Config, reload_config: Callable[[], Config] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self.instance = Instance(config, reload_config, loop=self, clock=clock)

    def run(self) -> int:
        """Run until stopped; return the exit status."""
        signals = SignalInbox()
        self.watch_readable(signals, lambda: self._on_signals(signals))
        try:
            exit_status = self.instance.start()
            while exit_status is None:
                self._turn()
                exit_status = self.instance.exit_status
        except NotifyError:  # systemd cannot be told: stop the children, then the caller says why
            self.instance.shut_down()
            raise
        self.instance.shut_down()
        return exit_status

    def _on_signals(self, signals: SignalInbox) -> None:
        for number in signals.drain():
            self.instance.on_signal(number)

    def _turn(self) -> None:
        instance = self.instance
        table = instance.deadlines()
        timeout = max(0.0, min(at for at, _, _ in table) - self.clock()) if table else None
        registered = self.selector.get_map()
        for key, _ in self.selector.select(timeout):
            # A callback earlier in this round may have unregistered this file (a child's exit
            # closes its pipes, which may be ready too) and its number may be reused already.
            if registered.get(key.fd) is key:
                key.data()
        now = self.clock()
        for at, timer, replica in instance.deadlines():
            if at <= now and instance.exit_status is None:
                instance.on_timer(timer, replica, now)
        if instance.exit_status is None:
            instance.start_jobs(now)
            instance.check_stopped()
        instance.publish()

    # -- what the instance registers -----------------------------------------------------------
    def watch_readable(self, fileobj: Any, callback: Callable[[], object]) -> None:
        self.selector.register(fileobj, selectors.EVENT_READ, callback)

    def forget(self, fileobj: Any) -> None:
        """Stop watching a file object (also one closed since it was registered)."""
        if any(key.fileobj is fileobj for key in self.selector.get_map().values()):
            self.selector.unregister(fileobj)

    def watch_child(self, child: Child, on_exit: Callable[[ChildResult], None]) -> None:
        """Feed the child's stdin, read its output, and call ``on_exit`` once it has exited."""
        self.selector.register(child.exit_fd, selectors.EVENT_READ, functools.partial(self._on_exit, child, on_exit))
        for stream, read in ((child.stdout, child.read_stdout), (child.stderr, child.read_stderr)):
            self.selector.register(stream, selectors.EVENT_READ, functools.partial(self._on_output, stream, read))
        if child.stdin_pending:
            self.selector.register(child.stdin, selectors.EVENT_WRITE, functools.partial(self._on_input, child))

    # One select() may report a child's exit and its pipes together: once the exit has been
    # handled the streams are closed, and their stale events are skipped.
    def _on_input(self, child: Child) -> None:
        if child.stdin.closed:
            return
        child.on_stdin_writable()
        if not child.stdin_pending:
            self.selector.unregister(child.stdin)

    def _on_output(self, stream: IO[bytes], read: Callable[[], bytes | None]) -> None:
        if stream.closed:
            return
        if read() == b"":  # the end of the output (None: nothing there yet)
            self.selector.unregister(stream)

    def _on_exit(self, child: Child, on_exit: Callable[[ChildResult], None]) -> None:
        if child.stdout.closed:
            return
        for fileobj in (child.stdin, child.stdout, child.stderr, child.exit_fd):
            self.forget(fileobj)
        on_exit(child.finish())
