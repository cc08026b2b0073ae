"""W8 restart (issue 14): from start to in sync after a clean stop and a few hundred changes made
while the daemon was down, warm (pirsyncd's state file) against a full sync at start.

    .venv/bin/python bench/restart.py [--large] [--ssh] [--repeat N] [--root /dev/shm]
                                      [--variants warm,full,lsyncd] [--seed 14] [--json out.json]

Each run, on a fresh W3 tree (20,000 dirs, 100,000 files of 100 bytes; ``--large``: the W3large
tree, 100,000 dirs and 1,000,000 files) and an empty destination: the daemon starts, reaches in sync
and is stopped with SIGTERM (by PID); the seeded changes of :func:`plan_changes` are made in the
source (new files, rewrites, deletions, a removed directory, a directory moved into another one with
changes below it, chmods, new directories); the daemon is started again, and right after the exec a
probe file is written at the source root. ``in_sync_s``: from the exec until the daemon says it is
in sync (pirsyncd: its status file, this process, ``in-sync`` with nothing pending; lsyncd: the end
of its startup rsync) *and* the probe is at the destination. Then a second probe (``probe_ms``:
it watches), and once it has settled the destination is compared with the source byte for byte
(``identical``) and by permission bits (``modes_identical``).

Variants (A B C per repetition, each on its own fresh trees, the same seeded changes):

- ``warm``: pirsyncd ``--state-file RUN/pirsyncd.state`` (``startup_sync`` left at its default,
  auto), in both runs. Skipped, saying so, when ``python -m pirsyncd --help`` has no ``--state-file``.
- ``full``: pirsyncd ``--state-file RUN/pirsyncd.state --startup-sync full`` (a pirsyncd without
  those options: no options, which is the same behaviour).
- ``lsyncd``: lsyncd 2.2.3 as in ``run.py`` (``default.rsync``, ``default.rsyncssh`` over ssh),
  which always runs a full rsync at start. It does not send permission bits (``-lts``), so
  ``modes_identical`` is 0 for it after the chmods.

``--ssh`` adds the same over ssh to a loopback sshd (``bench/sshd.py``). Everything goes through
``bench/rsync-wrapper`` as in ``run.py``: ``rsync_runs`` and ``rsync_wchar_mib`` count the runs
started between the exec and in sync. ``noop_full_s`` (the floor): a plain ``rsync -a --delete
SRC/ DST/`` of the final, in-sync tree after the daemon stopped, what a full sync costs when there
is nothing to send. Prints per transport the medians and ``warm/full`` (goal: at most 0.3),
``warm/lsyncd`` and ``full/lsyncd``. Exit status 1 when any run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import random
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import measure, workloads
from bench.daemons import (
    REPO_ROOT,
    SYSTEM_RSYNC,
    VENV_PYTHON,
    DaemonNotReady,
    RunningDaemon,
    Setup,
    SshTarget,
    pirsyncd_available,
    start_daemon,
)
from bench.workloads import MIB, Scale
from tests.support import daemon as harness
from tests.support.daemon import read_status_file
from tests.support.trees import differences, wait_for

VARIANTS = ("warm", "full", "lsyncd")
TRANSPORTS = ("local", "ssh")
PROBE_AT_START = "w8-probe-start"   # written right after the exec: the start must bring it over
PROBE_WATCHING = "w8-probe-watch"   # written once in sync: the daemon watches
DEFAULT_SEED = 14
# Figures whose ratio between variants is printed (the others are context).
RATIO_FIGURES = ("in_sync_s", "ready_s", "start_probe_s", "rsync_runs", "rsync_wchar_mib", "daemon_cpu_s")


# -- the changes made while the daemon is down ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ChangeCounts:
    """How many of each change; the total is "a few hundred" on the W3 tree."""

    new_files: int = 100       # in existing leaf directories
    rewrites: int = 100        # existing files, new content (half the same size), new mtime
    deletes: int = 50          # existing files unlinked
    chmod_files: int = 40      # 0644 -> 0600
    chmod_dirs: int = 5        # 0755 -> 0700
    new_dirs: int = 5          # new directories of files_per_new_dir files (one with a 2-deep chain)
    files_per_new_dir: int = 10
    # Half the rewrites keep the size. Not in the quick run: there the whole first run takes less
    # than a second, and rsync's quick check (size and whole-second mtime) would rightly skip a
    # same-size rewrite made in the same second (the W3 trees take seconds to mirror first).
    same_size_rewrites: bool = True


FULL_CHANGES = ChangeCounts()
QUICK_CHANGES = ChangeCounts(new_files=5, rewrites=5, deletes=5, chmod_files=5, chmod_dirs=2, new_dirs=2,
                             files_per_new_dir=3, same_size_rewrites=False)


@dataclasses.dataclass(frozen=True)
class Change:
    """One operation on the source: ``kind`` and paths relative to the source root.

    kinds: ``rename`` (path -> target), ``rmtree``, ``mkdir``, ``write`` (a new file of ``size``
    bytes), ``rewrite`` (an existing file, ``size`` bytes), ``unlink``, ``chmod`` (``mode``).
    """

    kind: str
    path: str
    target: str = ""
    size: int = 0
    mode: int = 0


def tree_file(scale: Scale, index: int) -> str:
    """The index-th file of the W3 tree (:func:`bench.workloads.build_many_dirs`), in its order.

    >>> tree_file(workloads.FULL, 0), tree_file(workloads.FULL, 5), tree_file(workloads.FULL, 1000)
    ('t0000/f0', 't0000/s0000/f0', 't0001/f0')
    """
    per_top = (scale.w3_subdirs + 1) * scale.w3_files_per_dir
    top, rest = divmod(index, per_top)
    slot, number = divmod(rest, scale.w3_files_per_dir)
    directory = f"t{top:04d}" if slot == 0 else f"t{top:04d}/s{slot - 1:04d}"
    return f"{directory}/f{number}"


def plan_changes(scale: Scale, counts: ChangeCounts, seed: int) -> list[Change]:
    """The seeded changes, in the order they are made; the same for every variant of a run.

    One top-level directory is moved into another one (``tA/moved-tB``, with one new file and one
    rewrite below it afterwards), one leaf directory is removed; the other changes touch distinct
    files outside both.

    >>> changes = plan_changes(workloads.FULL, FULL_CHANGES, 14)
    >>> len(changes), changes[0].kind, changes == plan_changes(workloads.FULL, FULL_CHANGES, 14)
    (356, 'rename', True)
    """
    rng = random.Random(seed)
    moved_top, into_top, removed_top = rng.sample(range(scale.w3_top_dirs), 3)
    moved = f"t{into_top:04d}/moved-t{moved_top:04d}"
    removed = f"t{removed_top:04d}/s{rng.randrange(scale.w3_subdirs):04d}"
    changes = [Change("rename", f"t{moved_top:04d}", moved)]
    moved_leaf = f"{moved}/s{rng.randrange(scale.w3_subdirs):04d}"
    changes += [Change("write", f"{moved_leaf}/w8-new-in-moved", size=rng.randrange(100, 4096)),
                Change("rewrite", f"{moved_leaf}/f0", size=200),
                Change("rmtree", removed)]

    def other_leaf() -> str:
        while True:
            top = rng.randrange(scale.w3_top_dirs)
            directory = f"t{top:04d}/s{rng.randrange(scale.w3_subdirs):04d}"
            if top != moved_top and directory != removed:
                return directory

    for number in range(counts.new_dirs):
        directory = f"{other_leaf().partition('/')[0]}/w8-new-dir{number}"
        changes.append(Change("mkdir", directory))
        if number == 0:
            changes += [Change("mkdir", f"{directory}/deep"), Change("mkdir", f"{directory}/deep/er")]
            directory = f"{directory}/deep/er"
        changes += [Change("write", f"{directory}/g{index}", size=rng.randrange(100, 8192))
                    for index in range(counts.files_per_new_dir)]
    total_files = scale.w3_top_dirs * (scale.w3_subdirs + 1) * scale.w3_files_per_dir
    wanted = counts.rewrites + counts.deletes + counts.chmod_files
    victims: list[str] = []
    for index in rng.sample(range(total_files), min(total_files, 2 * wanted + 50)):
        path = tree_file(scale, index)
        if not (path.startswith(f"t{moved_top:04d}/") or path.startswith(removed + "/")):
            victims.append(path)
    rewrites, victims = victims[:counts.rewrites], victims[counts.rewrites:]
    deletes, victims = victims[:counts.deletes], victims[counts.deletes:]
    chmods = victims[:counts.chmod_files]
    changes += [Change("rewrite", path, size=100 if number % 2 == 0 and counts.same_size_rewrites
                       else rng.randrange(200, 4096))
                for number, path in enumerate(rewrites)]
    changes += [Change("unlink", path) for path in deletes]
    changes += [Change("chmod", path, mode=0o600) for path in chmods]
    changes += [Change("write", f"{other_leaf()}/w8-new{number}", size=rng.randrange(100, 8192))
                for number in range(counts.new_files)]
    leaves: set[str] = set()
    while len(leaves) < counts.chmod_dirs:
        leaves.add(other_leaf())
    changes += [Change("chmod", directory, mode=0o700) for directory in sorted(leaves)]
    return changes


def change_content(seed: int, change: Change) -> bytes:
    """Deterministic bytes for a write or rewrite (the same in every variant)."""
    return random.Random(f"{seed}:{change.kind}:{change.path}").randbytes(change.size)


def apply_changes(source: str, changes: list[Change], seed: int) -> None:
    for change in changes:
        path = os.path.join(source, change.path)
        if change.kind == "rename":
            os.rename(path, os.path.join(source, change.target))
        elif change.kind == "rmtree":
            shutil.rmtree(path)
        elif change.kind == "mkdir":
            os.mkdir(path)
        elif change.kind in ("write", "rewrite"):
            workloads.write_file(path, change_content(seed, change))
        elif change.kind == "unlink":
            os.unlink(path)
        elif change.kind == "chmod":
            os.chmod(path, change.mode)
        else:
            raise ValueError(f"unknown change {change.kind}")


# -- the daemons -----------------------------------------------------------------------------------

@functools.cache
def pirsyncd_help() -> str:
    result = subprocess.run(harness.pirsyncd_command("--help", python=VENV_PYTHON), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    return result.stdout


def warm_supported() -> bool:
    return "--state-file" in pirsyncd_help()


def warm_skip_reason() -> str:
    return ("W8 pirsyncd/warm: this pirsyncd has no --state-file (issue 14's warm restart has not landed: "
            "`python -m pirsyncd --help` does not list it)")


def variant_arguments(variant: str, state_file: str) -> tuple[str, ...]:
    """pirsyncd's extra arguments for a variant (both runs of it get the same)."""
    if variant == "warm":
        return ("--state-file", state_file)
    if variant == "full" and "--startup-sync" in pirsyncd_help() and warm_supported():
        return ("--state-file", state_file, "--startup-sync", "full")
    return ()


def pirsyncd_ready_at(daemon: RunningDaemon) -> float | None:
    """The status file's ``updated`` once this process says in-sync with nothing pending."""
    status = read_status_file(daemon.setup.status_file)
    if (status.get("pid") == daemon.pid and status.get("state") == "in-sync" and not status.get("pending")
            and not status.get("full_sync_owed") and not status.get("job")):
        return float(status.get("updated") or time.time())
    return None


def lsyncd_ready_at(daemon: RunningDaemon) -> float | None:
    """The end of lsyncd's first successful rsync run in this (fresh) wrapper log: its startup sync."""
    runs = [run for run in measure.read_rsync_log(daemon.setup.rsync_log).finished if run.status == 0]
    return min(run.end for run in runs) if runs else None


def wait_settled(daemon: RunningDaemon, quiet: float, timeout: float) -> None:
    """No rsync run in flight, none ended for ``quiet`` s, pirsyncd in sync with nothing pending."""
    def settled() -> bool:
        daemon.check_alive()
        log = measure.read_rsync_log(daemon.setup.rsync_log)
        if log.running_pids or time.time() - max((run.end for run in log.finished), default=0.0) < quiet:
            return False
        return daemon.name != "pirsyncd" or pirsyncd_ready_at(daemon) is not None

    wait_for(settled, timeout, lambda: f"{daemon.name} did not settle:\n{daemon.output_tail()}", poll=0.01,
             error=DaemonNotReady)


@contextlib.contextmanager
def argv_logged(path: str) -> Iterator[None]:
    """Daemons started inside log every rsync argv to ``path`` (the wrapper's
    ``$BENCH_RSYNC_ARGV_LOG``, kept with ``--keep``); the environment is restored after."""
    before = os.environ.get("BENCH_RSYNC_ARGV_LOG")
    os.environ["BENCH_RSYNC_ARGV_LOG"] = path
    try:
        yield
    finally:
        if before is None:
            del os.environ["BENCH_RSYNC_ARGV_LOG"]
        else:
            os.environ["BENCH_RSYNC_ARGV_LOG"] = before


def set_aside(path: str, suffix: str) -> None:
    """Keep the first run's file under another name, so the restart starts a fresh one."""
    with contextlib.suppress(FileNotFoundError):
        root, extension = os.path.splitext(path)
        os.rename(path, f"{root}.{suffix}{extension}")


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def mode_differences(source: str, destination: str, limit: int = 10) -> tuple[int, list[str]]:
    """(count, first few) of paths whose permission bits differ (symlinks left out); no file is read."""
    count = 0
    shown: list[str] = []
    for directory, _subdirectories, files in os.walk(source):
        for name in ["", *files]:  # each directory once, as the walk's own
            path = os.path.join(directory, name) if name else directory
            relative = os.path.relpath(path, source)
            try:
                source_status = os.lstat(path)
                destination_status = os.lstat(os.path.join(destination, relative))
            except FileNotFoundError:
                continue  # a missing entry is the content check's business
            if stat.S_ISLNK(source_status.st_mode):
                continue
            if stat.S_IMODE(source_status.st_mode) != stat.S_IMODE(destination_status.st_mode):
                count += 1
                if len(shown) < limit:
                    shown.append(f"{relative} {stat.S_IMODE(source_status.st_mode):04o} != "
                                 f"{stat.S_IMODE(destination_status.st_mode):04o}")
    return count, shown


def noop_full_rsync(source: str, destination: str, ssh: SshTarget | None) -> float:
    """Seconds of ``rsync -a --delete SRC/ DST/`` (over ssh: ``-e ssh ...``) on the in-sync tree."""
    command = workloads.plain_rsync_command(source, destination, ssh)
    command.insert(2, "--delete")
    started = time.perf_counter()
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def log_lines(path: str, *needles: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as output:
            return [line.rstrip("\n") for line in output if any(needle in line for needle in needles)]
    except FileNotFoundError:
        return []


# -- one run ---------------------------------------------------------------------------------------

def restart_run(variant: str, scale: Scale, root: str, ssh: SshTarget | None = None, *,
                seed: int = DEFAULT_SEED, delay: float = 0.0, counts: ChangeCounts = FULL_CHANGES,
                keep: bool = False, noop: bool = True, label: str = "W8") -> tuple[dict[str, float], dict[str, str]]:
    """One variant of W8 on fresh trees; returns (figures, notes). Raises when a step does not
    finish in ``scale.timeout`` or a daemon exits."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown W8 variant {variant!r}")
    if variant == "warm" and not warm_supported():
        raise RuntimeError(warm_skip_reason())
    daemon_name = "lsyncd" if variant == "lsyncd" else "pirsyncd"
    run_dir = tempfile.mkdtemp(prefix=f"pirsyncd-bench-{label}-{variant}-", dir=root)
    # The 1-minute load average when the run starts: other work on the machine shows here.
    figures: dict[str, float] = {"loadavg_1m": os.getloadavg()[0]}
    notes: dict[str, str] = {"variant": variant, "run_dir": run_dir if keep else ""}
    try:
        source = os.path.join(run_dir, "src")
        destination = os.path.join(run_dir, "dst")
        os.mkdir(source)
        os.mkdir(destination)
        started = time.monotonic()
        workloads.write_file(os.path.join(source, "seed"), b"seed\n")
        workloads.build_many_dirs(source, scale.w3_top_dirs, scale.w3_subdirs, scale.w3_files_per_dir)
        figures["populate_s"] = time.monotonic() - started
        wrapper = os.path.join(run_dir, "rsync-wrapper")
        shutil.copy2(workloads.WRAPPER_TEMPLATE, wrapper)
        state_file = os.path.join(run_dir, "pirsyncd.state")
        arguments = variant_arguments(variant, state_file) if daemon_name == "pirsyncd" else ()
        notes["pirsyncd_arguments"] = shlex.join(arguments)
        setup = Setup(run_dir, source, destination, wrapper, wrapper + ".log", os.path.join(run_dir, "status.json"),
                      delay, ssh, SYSTEM_RSYNC, arguments)

        # 1. Mirror the tree, stop cleanly.
        argv_log = os.path.join(run_dir, "rsync-argv.log")
        with argv_logged(argv_log):
            first = start_daemon(daemon_name, setup)
        try:
            figures["first_sync_s"] = first.wait_ready(scale.timeout) - first.started_at
            wait_settled(first, 0.2 + delay, scale.timeout)
        finally:
            stop_started = time.time()
            first_status = first.stop()
            stopped_at = time.time()
        figures["stop_s"] = stopped_at - stop_started
        figures["stop_exit_status"] = first_status
        if daemon_name == "pirsyncd" and "--state-file" in arguments:
            header = read_json(state_file)
            sizes = [os.path.getsize(path) for path in (state_file, state_file + ".dirs") if os.path.exists(path)]
            figures["state_kib"] = sum(sizes) / 1024
            watermark = header.get("watermark")
            figures["watermark_age_s"] = stopped_at - watermark if isinstance(watermark, (int, float)) \
                else float("nan")
        for path, suffix in ((setup.rsync_log, "first"), (setup.status_file, "first"), (argv_log, "first"),
                             (os.path.join(run_dir, f"{daemon_name}.out"), "first")):
            set_aside(path, suffix)

        # 2. Change the source while the daemon is down.
        changes = plan_changes(scale, counts, seed)
        started = time.monotonic()
        apply_changes(source, changes, seed)
        figures["down_changes"] = len(changes)
        figures["down_s"] = time.monotonic() - started

        # 3. Start again; a probe right after the exec; wait for in sync and the probe.
        with argv_logged(argv_log):
            daemon = start_daemon(daemon_name, setup)
        probe_content = os.urandom(64)
        workloads.write_file(os.path.join(source, PROBE_AT_START), probe_content)
        probe_target = os.path.join(destination, PROBE_AT_START)
        moments: dict[str, float] = {}
        ready_at = pirsyncd_ready_at if daemon_name == "pirsyncd" else lsyncd_ready_at

        def in_sync() -> float | None:
            daemon.check_alive()
            if "probe" not in moments:
                with contextlib.suppress(FileNotFoundError):
                    if measure.read_bytes(probe_target) == probe_content:
                        moments["probe"] = time.time()
            if "ready" not in moments:
                ready = ready_at(daemon)
                if ready is not None:
                    moments["ready"] = ready
            return max(moments.values()) if len(moments) == 2 else None

        try:
            in_sync_at = wait_for(in_sync, scale.timeout,
                                  lambda: f"{daemon.name} not in sync after the restart ({sorted(moments)}):\n"
                                          f"{daemon.output_tail()}", poll=0.005, error=DaemonNotReady)
            figures["in_sync_s"] = in_sync_at - daemon.started_at
            figures["ready_s"] = moments["ready"] - daemon.started_at
            figures["start_probe_s"] = moments["probe"] - daemon.started_at
            runs = [run for run in measure.read_rsync_log(setup.rsync_log).finished if run.start <= in_sync_at]
            figures["first_rsync_s"] = (min(run.start for run in runs) - daemon.started_at) if runs \
                else float("nan")
            figures["rsync_runs"] = len(runs)
            figures["rsync_wchar_mib"] = sum(run.wchar for run in runs) / MIB
            figures["longest_rsync_s"] = max((run.end - run.start for run in runs), default=0.0)
            figures["rsync_failed_runs"] = sum(run.status != 0 for run in runs)
            figures["daemon_cpu_s"] = measure.cpu_seconds(daemon.pid)
            figures["peak_rss_mib"] = measure.peak_rss_mib(daemon.pid)
            if daemon_name == "pirsyncd":
                status = read_status_file(setup.status_file)
                full_syncs = (status.get("counters") or {}).get("full_syncs") or {}
                figures["full_syncs"] = sum(full_syncs.values())
                notes["full_syncs"] = json.dumps(full_syncs, sort_keys=True)
                start = status.get("start")
                if isinstance(start, dict):
                    notes["start_kind"] = str(start.get("kind"))
                    notes["start_reason"] = str(start.get("reason"))
                    if isinstance(start.get("changes"), (int, float)):
                        figures["start_changes"] = start["changes"]
                    if isinstance(start.get("seconds"), (int, float)):
                        figures["start_scan_s"] = start["seconds"]
            # Was it in sync when it said so? Names, kinds and sizes, listed once right then (no
            # file read); and any rsync run started after that moment, before the second probe.
            figures["listing_matched_at_in_sync"] = float(
                measure.tree_listing(source) == measure.tree_listing(destination))
            probe_written = time.time()
            figures["runs_after_in_sync"] = sum(
                in_sync_at < run.start < probe_written for run in measure.read_rsync_log(setup.rsync_log).finished)
            figures["probe_ms"] = daemon.probe(PROBE_WATCHING, scale.timeout) * 1000
            wait_settled(daemon, 0.3 + delay, scale.timeout)
            if daemon_name == "pirsyncd":
                lines = log_lines(daemon.output_path, "warm start", "full sync at start", "full sync sent")
                notes["start_log"] = " | ".join(line.removeprefix("pirsyncd: ") for line in lines[:4])
                figures["full_sync_lines"] = sum("full sync sent" in line for line in lines)
        finally:
            figures["restart_exit_status"] = daemon.stop()

        # 4. Compare, then the floor: a no-op full rsync of the same in-sync tree.
        figures["identical"] = float(measure.trees_identical(source, destination))
        if not figures["identical"]:
            found = [line for line in differences(source, destination) if not line.startswith("mode differs")]
            notes["differences"] = "; ".join(found[:20]) + (f" (+{len(found) - 20} more)" if len(found) > 20 else "")
        mode_count, mode_shown = mode_differences(source, destination)
        figures["modes_identical"] = float(mode_count == 0)
        if mode_count:
            notes["mode_differences"] = f"{mode_count}: " + "; ".join(mode_shown)
        if noop:
            figures["noop_full_s"] = noop_full_rsync(source, setup.destination_path, ssh)
        return figures, notes
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


# -- the whole benchmark ---------------------------------------------------------------------------

def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help="the W3large tree: 100,000 dirs, 1,000,000 files")
    parser.add_argument("--quick", action="store_true", help="the quick W3 tree and a few changes (smoke test)")
    parser.add_argument("--ssh", action="store_true", help="also over ssh to a loopback sshd")
    parser.add_argument("--ssh-only", action="store_true", help="only over ssh")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="default: %(default)s")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default: %(default)s)")
    parser.add_argument("--root", default="/dev/shm", help="where trees are made (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="of the changes (default: %(default)s)")
    parser.add_argument("--delay", type=float, default=0.0, help="the daemons' delay (default: %(default)s)")
    parser.add_argument("--no-noop", action="store_true", help="skip the no-op full rsync after each run")
    parser.add_argument("--keep", action="store_true", help="keep each run's directory (trees, logs)")
    parser.add_argument("--json", help="write every figure of every run here")
    arguments = parser.parse_args(argv)
    arguments.variants = [name.strip() for name in arguments.variants.split(",") if name.strip()]
    unknown = [name for name in arguments.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant: {', '.join(unknown)} (from {', '.join(VARIANTS)})")
    if arguments.large and arguments.quick:
        parser.error("--large or --quick, not both")
    arguments.transports = ["ssh"] if arguments.ssh_only else ["local", "ssh"] if arguments.ssh else ["local"]
    return arguments


def scale_of(arguments: argparse.Namespace) -> Scale:
    return workloads.LARGE if arguments.large else workloads.QUICK if arguments.quick else workloads.FULL


def check_inodes(root: str, scale: Scale) -> str | None:
    """Why the trees do not fit under root (source and mirror, about 2 x entries), or None."""
    entries = scale.w3_top_dirs * (scale.w3_subdirs + 1) * (scale.w3_files_per_dir + 1)
    available = os.statvfs(root).f_favail
    if available and available < 2 * entries + 10_000:
        return f"{root} has {available:,} free inodes; a run needs about {2 * entries:,}"
    return None


def format_figures(figures: dict[str, float]) -> str:
    return " ".join(f"{key}={value:.4g}" for key, value in figures.items())


def format_number(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def summarize(results: dict[str, dict[str, list[dict[str, float]]]]) -> list[dict]:
    """Per transport and figure: the median of each variant, and the ratios between them."""
    rows = []
    for transport, by_variant in results.items():
        names: list[str] = []
        for runs in by_variant.values():
            for run in runs:
                names += [name for name in run if name not in names]
        for figure in names:
            medians = {variant: measure.median([run[figure] for run in by_variant.get(variant, []) if figure in run])
                       for variant in VARIANTS}
            row = {"transport": transport, "figure": figure, **medians}
            for top, bottom in (("warm", "full"), ("warm", "lsyncd"), ("full", "lsyncd")):
                ratio = None
                if figure in RATIO_FIGURES and medians[bottom] and medians[bottom] == medians[bottom]:
                    ratio = medians[top] / medians[bottom]
                row[f"{top}/{bottom}"] = ratio
            rows.append(row)
    return rows


def table_lines(rows: list[dict]) -> list[str]:
    header = ["transport", "figure", *VARIANTS, "warm/full", "warm/lsyncd", "full/lsyncd"]
    body = [[row["transport"], row["figure"], *(format_number(row[name]) for name in header[2:])] for row in rows]
    widths = [max(len(cells[column]) for cells in [header, *body]) for column in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
            for cells in [header, *body]]


def goal_lines(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        if row["figure"] == "in_sync_s" and row["warm/full"] is not None and row["warm/full"] == row["warm/full"]:
            verdict = "met" if row["warm/full"] <= 0.3 else "NOT met"
            lines.append(f"{row['transport']}: warm/full in_sync_s = {row['warm/full']:.3f} (goal <= 0.3: {verdict})")
    return lines


@contextlib.contextmanager
def maybe_sshd(needed: bool) -> Iterator[SshTarget | None]:
    if not needed:
        yield None
        return
    from bench.sshd import loopback_sshd
    with loopback_sshd() as target:
        yield target


def stop_on_signal(number: int, _frame: object) -> None:
    """SIGTERM (and SIGINT, which a shell's background job ignores otherwise) end the benchmark
    through KeyboardInterrupt, so each run's ``finally`` stops its daemon by PID and removes
    its trees."""
    raise KeyboardInterrupt(f"signal {number}")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop_on_signal)
    scale = scale_of(arguments)
    if any(variant != "lsyncd" for variant in arguments.variants):
        problem = pirsyncd_available()
        if problem:
            print(f"restart.py: pirsyncd does not start ({problem})", file=sys.stderr)
            return 2
    skipped = []
    variants = list(arguments.variants)
    if "warm" in variants and not warm_supported():
        skipped.append(warm_skip_reason())
        variants.remove("warm")
        print(f"restart.py: {skipped[-1]}", file=sys.stderr)
    problem = check_inodes(arguments.root, scale)
    if problem:
        print(f"restart.py: {problem}", file=sys.stderr)
        return 2
    counts = QUICK_CHANGES if arguments.quick else FULL_CHANGES
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    all_notes: list[dict[str, str]] = []
    failures: list[str] = []
    tree = "W3large" if arguments.large else "W3 quick" if arguments.quick else "W3"
    full_options = shlex.join(variant_arguments("full", "STATE")) or "(no options)"
    print(f"restart.py: {tree} tree, {len(plan_changes(scale, counts, arguments.seed))} changes while down "
          f"(seed {arguments.seed}); full variant: pirsyncd {full_options}", file=sys.stderr)
    total_started = time.monotonic()
    with maybe_sshd("ssh" in arguments.transports) as ssh:
        for repetition in range(arguments.repeat):
            for transport in arguments.transports:
                for variant in variants:
                    label = f"W8{'large' if arguments.large else ''}{'ssh' if transport == 'ssh' else ''}"
                    name = f"{label} {variant} #{repetition + 1}"
                    print(f"-- {name} ...", file=sys.stderr, flush=True)
                    started = time.monotonic()
                    try:
                        figures, notes = restart_run(variant, scale, arguments.root,
                                                     ssh if transport == "ssh" else None, seed=arguments.seed,
                                                     delay=arguments.delay, counts=counts, keep=arguments.keep,
                                                     noop=not arguments.no_noop, label=label)
                    except Exception:  # reported; the other runs go on
                        failures.append(f"{name}: {traceback.format_exc().strip().splitlines()[-1]}")
                        traceback.print_exc()
                        continue
                    figures["run_s"] = time.monotonic() - started
                    results.setdefault(transport, {}).setdefault(variant, []).append(figures)
                    all_notes.append({"run": name, **{key: value for key, value in notes.items() if value}})
                    print(f"   {name}: {format_figures(figures)}", file=sys.stderr)
                    for key, value in notes.items():
                        if value and key not in ("variant",):
                            print(f"   {name}: {key}: {value}", file=sys.stderr)
                    sys.stderr.flush()
    rows = summarize(results)
    print("\n".join(table_lines(rows)))
    for line in goal_lines(rows) + [f"skipped: {line}" for line in skipped]:
        print(line)
    for failure in failures:
        print(f"FAILED {failure}")
    print(f"total {time.monotonic() - total_started:.0f} s")
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as json_file:
            json.dump({"command": shlex.join(sys.argv), "arguments": vars(arguments), "results": results,
                       "summary": rows, "notes": all_notes, "skipped": skipped, "failures": failures},
                      json_file, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
