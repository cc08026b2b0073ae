"""Fabricated children for driving the orchestration without processes: a Child that was
never started (what a step asked for, and whether it was asked to stop), a ChildResult as
rsync would end, the error lines rsync prints, and a loop that answers each command."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from pirsyncd.edges.runner import Child, ChildResult, Command
from pirsyncd.replica.replica import Replica
from pirsyncd.replica.results import ReplicaReport

PARTIAL_SUMMARY = ("rsync error: some files/attrs were not transferred (see previous errors) (code 23) "
                   "at main.c(1347) [sender=3.2.7]")
DELETIONS_SKIPPED = "IO error encountered -- skipping file deletion"


def sender_line(quoted_path: str, action: str = "send_files failed to open",
                after: str = ": Permission denied (13)") -> str:
    """One line as rsync prints it: ``rsync: [sender] opendir "/srv/www/d" failed: Permission denied (13)``."""
    return f'rsync: [sender] {action} "{quoted_path}"{after}'


def exited(status: int = 0, stderr: str = "", stdout: bytes = b"", stopped_for: str | None = None) -> ChildResult:
    """How a child ended, as the runner would report it."""
    return ChildResult(status, stdout, stderr, False, 0.001, stopped_for)


def listed_paths(command: Command) -> list[str]:
    """The paths a command is fed on stdin (NUL-terminated, as for --from0)."""
    return [entry.decode() for entry in command.stdin.split(b"\0")[:-1]]


class FakeChild(Child):
    """A child never started: the command, and the stop or kill asked of it."""

    def __init__(self, command: Command) -> None:  # no process: Child.__init__ is not called
        self.command = command
        self.argv, self.label = command.argv, command.label
        self.stopped_for: str | None = None
        self.killed = False
        self.stdout = io.BytesIO()
        self.stdout.close()  # as a reaped child's: nothing left to reap

    def stop(self, reason: str) -> None:
        self.stopped_for = self.stopped_for or reason

    def kill(self) -> None:
        self.killed = True

    def wait(self, timeout: float) -> ChildResult:
        return exited(-15, stopped_for=self.stopped_for)


Answer = Callable[[Command], ChildResult]


class FakeLoop:
    """Services children as the daemon's loop does, without processes: a replica's job
    driven to its end (``run_job``), or, as the loop an Instance is given, the children it
    watches answered when the test says (``answer``). Every command started is kept, in order."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.watched: list[tuple[FakeChild, Callable[[ChildResult], None]]] = []

    # -- what an Instance asks of its loop (pirsyncd.edges.loop.Loop) -------------------------------
    def watch_readable(self, fileobj: Any, callback: Callable[[], object]) -> None:
        pass  # no file is ever readable here: changes are handed to the replicas directly

    def forget(self, fileobj: Any) -> None:
        pass

    def watch_child(self, child: Child, on_exit: Callable[[ChildResult], None]) -> None:
        assert isinstance(child, FakeChild), "the instance was handed a real child"
        self.watched.append((child, on_exit))

    def answer(self, answer: Answer) -> list[Command]:
        """End every child watched now, each with what ``answer`` says; the commands ended."""
        watched, self.watched = self.watched, []
        for child, on_exit in watched:
            on_exit(answer(child.command))
        return [child.command for child, _ in watched]

    def start(self, command: Command) -> Child:
        """The replica's ``start`` (what the runner's start_child is in the daemon)."""
        self.commands.append(command)
        return FakeChild(command)

    def run_job(self, replica: Replica, now: float, answer: Answer, change_seq: int = 0) -> ReplicaReport:
        """Start the replica's due job and answer each of its children until it ends."""
        step = replica.start_due_job(now, change_seq, None, None)
        while isinstance(step, Child):
            assert isinstance(step, FakeChild), "a job started a real child"
            step = replica.child_exited(answer(step.command), now)
        return step

    def labels(self) -> list[str]:
        return [command.label for command in self.commands]


def succeed(command: Command) -> ChildResult:
    """Every run succeeds."""
    return exited(0)
