"""Where the instance decides, driven without processes: its replicas' children are fakes
the loop (tests/support/fabricated.FakeLoop) ends with fabricated results, the clock is a
plain number, and changes are handed to the replicas as the source side would. What is
checked: how many jobs run at once, when every destination failing ends the daemon, a
source problem a job found stopping all sending, and stopping with work pending."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pirsyncd.config import exitcodes
from pirsyncd.config.parse import parse
from pirsyncd.edges.runner import Command
from pirsyncd.instance import Instance
from pirsyncd.policy import Hold
from pirsyncd.replica.policy import ReplicaState
from pirsyncd.source.events import Change, ChangeKind
from tests.support.fabricated import FakeLoop, exited, succeed
from tests.support.trees import write_file

NAMES = ("web1", "web2")


class Clock:
    """The instance's monotonic clock: a number the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Daemon:
    """An Instance with two local destinations, never started (nothing is watched): the
    test hands changes to its replicas and turns the loop as pirsyncd.service does."""

    def __init__(self, tmp_path: Path, parallel_syncs: int = 2) -> None:
        self.source = tmp_path / "src"
        self.source.mkdir()
        sections = ""
        for name in NAMES:
            (tmp_path / name).mkdir()
            sections += f"[destination {name}]\ndestination = {tmp_path / name}\n"
        config = parse(f"[sync]\nsource = {self.source}\ndelay = 0.5\nparallel_syncs = {parallel_syncs}\n"
                       f"status_file = {tmp_path / 'status.json'}\nstate_file = {tmp_path / 'state'}\n"
                       f"[rsync]\ndeletion_mode = parents\n{sections}", "instance.conf")
        self.clock, self.loop = Clock(), FakeLoop()
        self.instance = Instance(config, None, self.loop, self.clock)
        self.instance.policy.started(0.0)  # its phase is RUNNING: jobs may start
        for replica in self.instance.replicas:
            replica.start_child = self.loop.start
            replica.start_full(0.0, run=False)

    def change(self, path: str) -> None:
        write_file(self.source / path)
        for replica in self.instance.replicas:
            replica.add([Change(ChangeKind.CHANGED, path)], set(), self.clock.now, 1)

    def turn(self, now: float) -> None:
        """What the loop does after its select: start what is due, see whether to exit."""
        self.clock.now = now
        if self.instance.exit_status is None:
            self.instance.start_jobs(now)
            self.instance.check_stopped()

    def running(self) -> list[str]:
        return [replica.name for replica in self.instance.replicas if replica.job is not None]


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    return Daemon(tmp_path)


def destination_of(command: Command) -> str:
    return command.argv[-1].rstrip("/").rsplit("/", 1)[-1]


def test_parallel_syncs_bounds_the_jobs_and_the_next_replica_goes_next(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, parallel_syncs=1)
    daemon.change("a.txt")
    daemon.turn(0.5)
    assert daemon.running() == ["web1"]
    daemon.loop.answer(succeed)
    daemon.turn(0.5)
    assert daemon.running() == ["web2"]
    daemon.loop.answer(succeed)
    assert [destination_of(command) for command in daemon.loop.commands] == ["web1", "web2"]
    daemon.change("b.txt")
    daemon.turn(1.5)
    assert daemon.running() == ["web1"]  # round robin: after web2 comes web1 again


def test_the_daemon_ends_with_the_exit_status_only_once_every_destination_failed(daemon: Daemon) -> None:
    daemon.change("a.txt")
    daemon.turn(0.5)
    assert daemon.running() == list(NAMES)
    daemon.loop.answer(lambda command: exited(1) if destination_of(command) == "web1" else exited(0))
    assert daemon.instance.replicas[0].policy.state == ReplicaState.FAILED
    assert daemon.instance.exit_status is None  # web2 goes on
    daemon.change("b.txt")
    daemon.turn(1.5)
    assert daemon.running() == ["web2"]
    daemon.loop.answer(lambda command: exited(1))
    assert daemon.instance.exit_status == exitcodes.CONFIG


def test_a_source_problem_a_job_found_stops_all_sending_until_the_source_is_back(daemon: Daemon) -> None:
    for replica in daemon.instance.replicas:
        replica.request_full_sync(0.0, at_once=True, reason="overflow")
    daemon.source.rmdir()
    daemon.turn(0.0)
    assert daemon.loop.commands == [] and daemon.instance.state.hold == Hold.SOURCE_LOST
    assert daemon.instance.warning is not None and "source" in daemon.instance.warning
    daemon.turn(100.0)
    assert daemon.loop.commands == [] and daemon.running() == []
    assert all(replica.pending.full_sync_needed for replica in daemon.instance.replicas)


def test_a_source_problem_found_by_one_job_keeps_the_next_from_starting_in_the_same_turn(
        daemon: Daemon, tmp_path: Path) -> None:
    """web1's full sync refuses to mirror an empty source over its files (an unmounted source
    looks like that); web2, due in the same turn with a batch of deletions, must not start."""
    write_file(tmp_path / "web1" / "kept.txt")
    daemon.instance.replicas[0].request_full_sync(0.0, at_once=True, reason="overflow")
    daemon.instance.replicas[1].add([Change(ChangeKind.REMOVED, "kept.txt")], set(), 0.0, 1)
    daemon.turn(0.5)
    assert daemon.instance.state.hold == Hold.SOURCE_LOST
    assert daemon.loop.commands == [] and daemon.running() == []


def test_losing_the_source_stops_the_running_jobs_and_keeps_their_batches(daemon: Daemon) -> None:
    daemon.change("a.txt")
    daemon.turn(0.5)
    children = [child for child, _ in daemon.loop.watched]
    daemon.instance.lose_source("the source root was deleted, moved or unmounted", 0.6)
    assert [child.stopped_for for child in children] == ["source lost", "source lost"]
    daemon.loop.answer(lambda command: exited(20, stopped_for="source lost"))
    daemon.turn(100.0)
    assert daemon.running() == [] and len(daemon.loop.commands) == 2
    assert all(replica.has_pending for replica in daemon.instance.replicas)


def test_stopping_sends_what_is_pending_at_once_then_exits(daemon: Daemon) -> None:
    daemon.change("a.txt")
    daemon.instance.on_signal(signal.SIGTERM)
    daemon.turn(0.1)  # before the delay: stopping sends at once
    assert daemon.running() == list(NAMES) and daemon.instance.exit_status is None
    daemon.loop.answer(succeed)
    daemon.turn(0.2)
    assert daemon.instance.exit_status == exitcodes.OK
    assert not any(replica.has_pending for replica in daemon.instance.replicas)


def test_stopping_with_a_destination_that_keeps_failing_exits_with_its_changes_kept(daemon: Daemon) -> None:
    daemon.change("a.txt")
    daemon.turn(0.5)
    daemon.loop.answer(lambda command: exited(10) if destination_of(command) == "web1" else exited(0))
    daemon.instance.on_signal(signal.SIGTERM)
    daemon.turn(0.6)  # web1 waits for its backoff: stopping does not wait for it
    assert daemon.running() == []
    assert daemon.instance.exit_status == exitcodes.OK
    assert daemon.instance.replicas[0].has_pending


def test_a_second_sigterm_stops_the_running_rsyncs_at_once(daemon: Daemon) -> None:
    daemon.change("a.txt")
    daemon.instance.on_signal(signal.SIGTERM)
    daemon.turn(0.1)
    children = [child for child, _ in daemon.loop.watched]
    daemon.instance.on_signal(signal.SIGTERM)
    assert [child.stopped_for for child in children] == ["second SIGTERM"] * 2
    assert daemon.instance.exit_status == exitcodes.OK


def test_a_paused_instance_starts_no_job_shows_paused_and_a_stop_does_not_wait_for_it(daemon: Daemon) -> None:
    pause_file = daemon.instance.ops.pause.path
    assert pause_file is not None
    Path(pause_file).write_text("paused by a test\n")
    daemon.instance.on_signal(signal.SIGUSR2)
    daemon.change("a.txt")
    daemon.turn(5.0)
    assert daemon.running() == [] and daemon.instance.snapshot()["state"] == "paused"
    daemon.instance.on_signal(signal.SIGTERM)
    assert daemon.instance.snapshot()["state"] == "stopping"
    daemon.turn(5.1)  # nothing can be sent until resumed: the stop ends at once, changes kept
    assert daemon.loop.commands == [] and daemon.instance.exit_status == exitcodes.OK
    assert all(replica.has_pending for replica in daemon.instance.replicas)


def test_resuming_sends_what_was_kept_while_paused(daemon: Daemon) -> None:
    pause_file = Path(daemon.instance.ops.pause.path or "")
    pause_file.write_text("paused by a test\n")
    daemon.instance.on_signal(signal.SIGUSR2)
    daemon.change("a.txt")
    daemon.turn(5.0)
    assert daemon.running() == []
    pause_file.unlink()
    daemon.instance.on_signal(signal.SIGUSR2)
    daemon.turn(5.1)
    assert daemon.running() == list(NAMES)


def test_a_reload_keeps_the_destinations_that_stay_and_fully_syncs_a_new_one(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    daemon.change("a.txt")
    daemon.turn(0.5)
    web1, web2 = daemon.instance.replicas
    assert daemon.running() == ["web1", "web2"]
    daemon.loop.answer(lambda command: exited(10) if destination_of(command) == "web1" else exited(0))
    assert web1.has_pending and not web2.has_pending  # web1 failed: its batch is kept for the retry
    (tmp_path / "web3").mkdir()
    old = daemon.instance.config
    new = parse(f"[sync]\nsource = {daemon.source}\ndelay = 0.5\nstatus_file = {old.status_file}\n"
                f"state_file = {old.state_file}\n[rsync]\ndeletion_mode = parents\n"
                f"[destination web1]\ndestination = {tmp_path / 'web1'}\n"
                f"[destination web3]\ndestination = {tmp_path / 'web3'}\n", "instance.conf")
    daemon.instance._apply(new)
    kept, added = daemon.instance.replicas
    assert (kept, kept.name, added.name) == (web1, "web1", "web3")
    assert kept.has_pending and not kept.pending.full_sync_needed  # its changes, not a full sync
    assert added.pending.full_sync_needed  # a new destination starts with a full sync
    added.start_child = daemon.loop.start
    daemon.turn(0.6)  # web3's full sync is due at once; web1 keeps its backoff (1 s)
    assert daemon.running() == ["web3"]
    daemon.loop.answer(succeed)
    daemon.turn(1.5)
    assert daemon.running() == ["web1"]
    assert [destination_of(command) for command in daemon.loop.commands[2:]] == ["web3", "web1"]
