"""Soak: many seeded churn runs against long-lived daemons, each ending in an exact tree
comparison and a settled daemon. ``scripts/soak`` runs it:

    scripts/soak --runs 2000                     # every profile, delay 0 and 1 s, both deletion paths
    scripts/soak --runs 200 --backend fanotify   # the same with watch_backend = fanotify (root)
    scripts/soak --seed 1234 --profile sneaky --delay 0 --deletion-path parents   # replay one run

Runs are spread over every (profile, delay, deletion path, backend) in turn; seed ``first_seed +
index``. ``--backend`` is inotify (the default), fanotify or both. One daemon per (backend,
deletion path, delay) serves its runs one after another, each in a fresh
directory ``seed-N`` of the source: churn, ``pirsyncd wait``, compare at once (a daemon that says
"in sync" must be), then the settled check of ``tests/integration/test_churn.py``: a change made
now is sent with no retry, the status says in-sync and nothing failing. Then ``seed-N`` is removed
(and that removal mirrored) before the next run. A run that fails restarts its daemon on emptied
trees, so one bug does not fail every run after it. ``--jobs 2`` runs two daemons at a time.

Under fanotify a group's trees lie on a tmpfs of its own (mounted for the group, unmounted at its
end), so that its filesystem mark sees that group's events only: the daemon's log and status file
stay outside it, and the trees of a failed run are moved out before the unmount. Where this
machine cannot place a filesystem mark (not root, an old kernel), the soak says why and stops.

A failing run prints one line to reproduce it; its report (the workload's operations, the
differences, the end of the daemon log) and its trees are kept in the work directory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.queues
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from tests.support import backends, rsyncs
from tests.support.daemon import Daemon, run_pirsyncd
from tests.support.mounts import Mounts
from tests.support.workload import PROFILES, Workload

DEFAULT_DELAY = "1"
DELAYS = ("0", DEFAULT_DELAY)
WAIT_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Run:
    """One seeded churn run and where it runs."""

    seed: int
    profile: str
    delay: str
    deletion_path: str
    operations: int
    backend: str = backends.INOTIFY

    def reproduction(self) -> str:
        """The one command that replays this run alone, on a fresh daemon."""
        return (f"scripts/soak --seed {self.seed} --profile {self.profile} --delay {self.delay} "
                f"--deletion-path {self.deletion_path} --operations {self.operations} --backend {self.backend}")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a run ended: ``ok``, ``divergence`` (``pirsyncd wait`` said in sync, the trees differ),
    ``unsettled`` (no confirmation, a retry, a failing path, a dead daemon) or ``error`` (the
    workload or the harness failed: a bug of the test side)."""

    run: Run
    verdict: str
    detail: str = ""
    seconds: float = 0.0


def plan_runs(runs: int, first_seed: int, profiles: tuple[str, ...], delays: tuple[str, ...],
              deletion_paths: tuple[str, ...], operations: int,
              watch_backends: tuple[str, ...] = (backends.INOTIFY,)) -> list[Run]:
    """``runs`` runs cycling through profiles fastest, then delays, then deletion paths, then
    backends.

    >>> [(run.seed, run.profile, run.delay, run.deletion_path)
    ...  for run in plan_runs(3, 7, ("a", "b"), ("0",), ("parents", "missing-args"), 10)]
    [(7, 'a', '0', 'parents'), (8, 'b', '0', 'parents'), (9, 'a', '0', 'missing-args')]
    >>> [(run.deletion_path, run.backend) for run in plan_runs(
    ...     3, 1, ("a",), ("0",), ("parents", "missing-args"), 10, ("inotify", "fanotify"))]
    [('parents', 'inotify'), ('missing-args', 'inotify'), ('parents', 'fanotify')]
    """
    plan = []
    for index in range(runs):
        profile = profiles[index % len(profiles)]
        rest = index // len(profiles)
        delay = delays[rest % len(delays)]
        rest //= len(delays)
        deletion_path = deletion_paths[rest % len(deletion_paths)]
        backend = watch_backends[(rest // len(deletion_paths)) % len(watch_backends)]
        plan.append(Run(first_seed + index, profile, delay, deletion_path, operations, backend))
    return plan


class Group:
    """One daemon (a backend, a deletion path and a delay) and the trees it mirrors, under
    ``workdir`` (under fanotify on a tmpfs mounted at ``workdir/trees``: :meth:`close` unmounts
    it)."""

    def __init__(self, workdir: Path, deletion_path: rsyncs.DeletionPath, delay: str,
                 daemon_arguments: tuple[str, ...] = (), backend: str = backends.INOTIFY) -> None:
        self.workdir = workdir
        self.daemon_arguments = daemon_arguments
        self.deletion_path = deletion_path
        self.delay = delay
        self.backend = backend
        self.trees = workdir / "trees" if backend == backends.FANOTIFY else workdir
        self.source, self.destination = self.trees / "source", self.trees / "destination"
        self.outside = self.trees / "outside"
        self.daemon: Daemon | None = None
        self.starts = 0
        self.mounts = Mounts()
        self.kept: list[Path] = []  # the trees of failed runs, moved out of the tmpfs at the end
        if backend == backends.FANOTIFY:
            self.trees.mkdir(parents=True, exist_ok=True)
            self.mounts.mount("-t", "tmpfs", "tmpfs", target=self.trees)

    def close(self) -> None:
        """Stop the daemon; under fanotify move the kept trees out and unmount the tmpfs."""
        self.stop()
        if self.trees != self.workdir:
            for tree in self.kept:
                shutil.move(tree, self.workdir / tree.name)
            self.mounts.unmount_everything()

    def start(self) -> Daemon:
        for directory in (self.source, self.destination, self.outside):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        # Between two runs the source must not be empty: pirsyncd refuses to mirror an empty
        # source over a non-empty destination (allow_empty_source), by design.
        (self.source / "soak").write_text("the soak's runs come and go beside this file\n")
        self.starts += 1
        with rsyncs.using(self.deletion_path), backends.using(self.backend):
            daemon = Daemon(self.workdir / f"daemon-{self.starts}", "--source", str(self.source),
                            "--destination", str(self.destination), "--delay", self.delay,
                            *self.daemon_arguments)
            daemon.start(timeout=120)
        self.daemon = daemon
        return daemon

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def soak(self, run: Run) -> Outcome:
        started = time.monotonic()
        daemon = self.daemon or self.start()
        try:
            verdict, detail = self._churn_and_check(daemon, run)
        except Exception:  # a bug of the workload or the harness: this run's, not the group's end
            verdict, detail = "error", traceback.format_exc()
        if verdict != "ok":
            report = self.workdir / f"seed-{run.seed}.txt"
            report.write_text(f"{run.reproduction()}\n{detail}\n--- daemon log:\n{daemon.log()[-20000:]}\n",
                              errors="replace")
            detail = f"{detail.splitlines()[0] if detail else ''} (report: {report})"
            self.stop()  # the next run starts afresh; the trees stay for a look
            for tree in (self.source, self.destination, self.outside):
                kept = self.trees / f"seed-{run.seed}.{tree.name}"
                tree.rename(kept)
                self.kept.append(kept)
        return Outcome(run, verdict, detail, time.monotonic() - started)

    def _churn_and_check(self, daemon: Daemon, run: Run) -> tuple[str, str]:
        root, outside = self.source / f"seed-{run.seed}", self.outside / f"seed-{run.seed}"
        root.mkdir()
        outside.mkdir()
        workload = Workload(root, run.seed, run.profile, outside)
        workload.run(run.operations)
        try:
            daemon.assert_in_sync(self.source, self.destination, WAIT_TIMEOUT)
        except AssertionError as error:
            verdict = "divergence" if "the trees differ" in str(error) else "unsettled"
            return verdict, f"{error}\n{workload.report()}"
        try:
            daemon.assert_settled(root / "after-the-churn", self.destination / root.name / "after-the-churn")
            daemon.assert_watching(self.source)
        except (AssertionError, OSError) as error:
            return "unsettled", f"not settled after the churn: {error}\n{workload.report()}"
        shutil.rmtree(root)
        shutil.rmtree(outside)
        if (problem := self._wait(daemon)) is not None:
            return "unsettled", f"removing the run's tree: {problem}"
        if os.path.lexists(self.destination / root.name):
            return "divergence", f"the run's tree was removed, not at the destination\n{workload.report()}"
        return "ok", ""

    def _wait(self, daemon: Daemon) -> str | None:
        """``pirsyncd wait``; None once confirmed, else why not."""
        if not daemon.alive():
            return f"pirsyncd exited with {daemon.process and daemon.process.returncode}"
        result = run_pirsyncd("wait", "--status-file", str(daemon.status_file), "--timeout", str(WAIT_TIMEOUT),
                              timeout=WAIT_TIMEOUT + 30)
        if result.returncode != 0 or result.stderr.strip():
            return f"pirsyncd wait exited {result.returncode}: {result.stderr.strip()}"
        return None


def soak_group(workdir: Path, deletion_path_name: str, delay: str, runs: list[Run],
               results: multiprocessing.queues.Queue[Outcome] | None = None,
               daemon_arguments: tuple[str, ...] = (), backend: str = backends.INOTIFY) -> list[Outcome]:
    """Run ``runs`` (all on one backend, deletion path and delay) one after another; print each failure.

    SIGTERM ends it between two steps, its daemon stopped first (the parent's way to stop it).
    """
    signal.signal(signal.SIGTERM, _interrupt)
    deletion_path = rsyncs.deletion_path(deletion_path_name)
    if deletion_path is None:
        raise SystemExit(rsyncs.missing_args_rsync_problem())
    group = Group(workdir, deletion_path, delay, daemon_arguments, backend)
    outcomes = []
    try:
        for run in runs:
            outcome = group.soak(run)
            outcomes.append(outcome)
            if results is not None:
                results.put(outcome)
            if outcome.verdict != "ok":
                print(f"{outcome.verdict.upper()}: seed {run.seed} profile {run.profile} delay {run.delay} "
                      f"{run.deletion_path} {run.backend}: {outcome.detail}\n  reproduce: {run.reproduction()}",
                      flush=True)
    except KeyboardInterrupt:
        pass  # asked to stop: the daemon is stopped below
    finally:
        group.close()
    return outcomes


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt


def _groups(plan: list[Run]) -> Iterator[tuple[str, str, str, list[Run]]]:
    keys = sorted({(run.backend, run.deletion_path, run.delay) for run in plan})
    for backend, deletion_path, delay in keys:
        yield backend, deletion_path, delay, [
            run for run in plan if (run.backend, run.deletion_path, run.delay) == (backend, deletion_path, delay)]


def _run_groups(workdir: Path, plan: list[Run], jobs: int, daemon_arguments: tuple[str, ...] = ()) -> list[Outcome]:
    """Each group in a process of its own, ``jobs`` at a time; on Ctrl-C or SIGTERM every
    running one is sent SIGTERM (by PID) and waited for, so that it stops its daemon."""
    signal.signal(signal.SIGTERM, _interrupt)
    results: multiprocessing.queues.Queue[Outcome] = multiprocessing.Queue()
    waiting = list(_groups(plan))
    running: list[multiprocessing.Process] = []
    outcomes: list[Outcome] = []
    started = time.monotonic()
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                backend, deletion_path, delay, runs = waiting.pop(0)
                process = multiprocessing.Process(target=soak_group, args=(
                    workdir / f"{backend}-{deletion_path}-delay{delay}", deletion_path, delay, runs, results,
                    daemon_arguments, backend))
                process.start()
                running.append(process)
            with contextlib.suppress(queue.Empty):
                outcomes.append(results.get(timeout=1))
            for process in [process for process in running if not process.is_alive()]:
                running.remove(process)
                if process.exitcode:
                    print(f"soak: a group's process exited with {process.exitcode}; its remaining runs "
                          "are not counted", flush=True)
        while not results.empty():
            outcomes.append(results.get())
    except KeyboardInterrupt:
        print(f"soak: interrupted; the runs that ended so far:\n{summarize(outcomes, time.monotonic() - started)}",
              flush=True)
        raise
    finally:
        for process in running:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process in running:
            process.join()
    return outcomes


def summarize(outcomes: list[Outcome], seconds: float) -> str:
    """One line per backend, profile, delay and deletion path, then the totals and the throughput."""
    lines = [f"{'backend':<8} {'profile':<9} {'delay':>5} {'deletion path':<13} {'runs':>5} {'divergences':>11} "
             f"{'unsettled':>9} {'errors':>6}"]

    def key(outcome: Outcome) -> tuple[str, str, str, str]:
        return outcome.run.backend, outcome.run.profile, outcome.run.delay, outcome.run.deletion_path

    for backend, profile, delay, deletion_path in sorted({key(outcome) for outcome in outcomes}):
        verdicts = [outcome.verdict for outcome in outcomes
                    if key(outcome) == (backend, profile, delay, deletion_path)]
        lines.append(f"{backend:<8} {profile:<9} {delay:>5} {deletion_path:<13} {len(verdicts):>5} "
                     f"{verdicts.count('divergence'):>11} {verdicts.count('unsettled'):>9} "
                     f"{verdicts.count('error'):>6}")
    divergences = sum(outcome.verdict == "divergence" for outcome in outcomes)
    unsettled = sum(outcome.verdict == "unsettled" for outcome in outcomes)
    rate = len(outcomes) / seconds * 60 if seconds else 0.0
    errors = sum(outcome.verdict == "error" for outcome in outcomes)
    lines.append(f"runs: {len(outcomes)}, divergences: {divergences}, unsettled: {unsettled}, errors: {errors}; "
                 f"{seconds:.0f} s, {rate:.1f} runs/min")
    return "\n".join(lines)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, help="how many runs (default 1 with --seed, else 24)")
    parser.add_argument("--seed", type=int, help="the first seed (default 1)")
    parser.add_argument("--profile", choices=PROFILES, action="append", help="only this profile (repeatable)")
    parser.add_argument("--delay", action="append", help="only this --delay (repeatable; default 0 and 1)")
    parser.add_argument("--deletion-path", choices=rsyncs.DELETION_PATHS, action="append",
                        help="only this deletion path (repeatable; default both)")
    parser.add_argument("--backend", choices=(*backends.BACKENDS, "both"), default=backends.INOTIFY,
                        help="watch_backend of the daemons: inotify (default), fanotify (needs root: each "
                             "daemon's trees on a tmpfs of their own) or both")
    parser.add_argument("--operations", type=int, default=150, help="workload operations per run (default 150)")
    parser.add_argument("--jobs", type=int, default=2, help="daemons at a time (default 2)")
    parser.add_argument("--debug", action="store_true",
                        help="run the daemons with --debug-events --debug-commands (slower; for a replay)")
    parser.add_argument("--workdir", type=Path, help="where the trees go (default a new temporary directory, "
                                                     "removed at the end when nothing failed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    runs = arguments.runs if arguments.runs is not None else (1 if arguments.seed is not None else 24)
    watch_backends = backends.BACKENDS if arguments.backend == "both" else (arguments.backend,)
    plan = plan_runs(runs, arguments.seed if arguments.seed is not None else 1,
                     tuple(arguments.profile or PROFILES), tuple(arguments.delay or DELAYS),
                     tuple(arguments.deletion_path or (rsyncs.PARENTS, rsyncs.MISSING_ARGS)), arguments.operations,
                     watch_backends)
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="pirsyncd-soak-"))
    if backends.FANOTIFY in watch_backends and (refusal := _fanotify_refusal(workdir)) is not None:
        print(f"soak: --backend {arguments.backend} is not possible here: {refusal}", file=sys.stderr)
        if arguments.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        return 2
    print(f"soak: {len(plan)} runs of {arguments.operations} operations in {workdir}, {arguments.jobs} at a time",
          flush=True)
    started = time.monotonic()
    try:
        outcomes = _run_groups(workdir, plan, max(1, arguments.jobs),
                               ("--debug-events", "--debug-commands") if arguments.debug else ())
    except KeyboardInterrupt:
        print(f"soak: interrupted; the trees are in {workdir}", file=sys.stderr)
        return 130
    seconds = time.monotonic() - started
    print(summarize(outcomes, seconds))
    failed = [outcome for outcome in outcomes if outcome.verdict != "ok"]
    for outcome in failed:
        print(f"  {outcome.verdict}: {outcome.run.reproduction()}")
    if not failed and arguments.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def _fanotify_refusal(workdir: Path) -> str | None:
    """Why the soak cannot run under fanotify here (tried on a tmpfs mounted in ``workdir``), or None."""
    if os.geteuid() != 0:
        return backends.fanotify_refusal(workdir)
    probe, mounts = workdir / "fanotify-probe", Mounts()
    probe.mkdir(parents=True)
    try:
        mounts.mount("-t", "tmpfs", "tmpfs", target=probe)
        return backends.fanotify_refusal(probe)
    except subprocess.CalledProcessError as error:
        return f"cannot mount a tmpfs for the trees ({error})"
    finally:
        mounts.unmount_everything()
        probe.rmdir()


if __name__ == "__main__":
    sys.exit(main())
