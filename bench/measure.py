"""Measuring without disturbing: the rsync wrapper log, /proc figures, trees and statistics.

Timestamps that cross processes are wall-clock epochs (``time.time()`` here, ``$EPOCHREALTIME`` in
the wrapper, ``updated`` in pirsyncd's status file), so they can be compared with one another.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Iterable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class RsyncRun:
    """One finished rsync run as the wrapper logged it (``end START END STATUS WCHAR RCHAR PID
    [CPU_TICKS]``; ``cpu_s`` NaN in a log without the CPU field)."""

    start: float
    end: float
    status: int
    wchar: int
    rchar: int
    wrapper_pid: int
    cpu_s: float = float("nan")


@dataclasses.dataclass(frozen=True)
class RsyncLog:
    """Everything the wrapper logged so far: finished runs and the PIDs of runs still going."""

    finished: tuple[RsyncRun, ...]
    running_pids: frozenset[int]

    def finished_since(self, epoch: float) -> list[RsyncRun]:
        return [run for run in self.finished if run.start >= epoch]


def parse_rsync_log(text: str) -> RsyncLog:
    """Parse the wrapper log; a torn last line (being written) is ignored.

    >>> parse_rsync_log("start 1.0 7\\nend 1.0 2.5 0 100 90 7\\nstart 3.0 8\\n").running_pids
    frozenset({8})
    >>> parse_rsync_log("end 1.0 2.5 0 100 90 7 250\\n").finished[0].cpu_s == 250 / CLOCK_TICKS
    True
    """
    finished: list[RsyncRun] = []
    started: set[int] = set()
    ended: set[int] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == "start":
            started.add(int(fields[2]))
        elif len(fields) in (7, 8) and fields[0] == "end":
            run = RsyncRun(float(fields[1]), float(fields[2]), int(fields[3]), int(fields[4]),
                           int(fields[5]), int(fields[6]),
                           int(fields[7]) / CLOCK_TICKS if len(fields) == 8 else float("nan"))
            finished.append(run)
            ended.add(run.wrapper_pid)
    return RsyncLog(tuple(finished), frozenset(started - ended))


def read_rsync_log(path: str) -> RsyncLog:
    try:
        with open(path, encoding="ascii") as log_file:
            return parse_rsync_log(log_file.read())
    except FileNotFoundError:
        return RsyncLog((), frozenset())


# -- /proc -------------------------------------------------------------------------------------

def read_status_fields(status_path: str) -> dict[str, str]:
    """The ``Key: value`` lines of a /proc/PID/status (or /proc/PID/task/TID/status) file."""
    fields = {}
    with open(status_path, encoding="ascii") as status_file:
        for line in status_file:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    return int(read_status_fields(f"/proc/{pid}/status")["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (dead threads included), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat_file:
        fields = stat_file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclasses.dataclass(frozen=True)
class Activity:
    """Nanosecond-precise CPU time and context switches summed over a process's threads."""

    runtime_ns: int
    context_switches: int


def read_activity(pid: int) -> Activity:
    runtime_ns = 0
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as schedstat:
                runtime_ns += int(schedstat.read().split()[0])
            fields = read_status_fields(f"/proc/{pid}/task/{task}/status")
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        switches += int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])
    return Activity(runtime_ns, switches)



# -- trees -------------------------------------------------------------------------------------

def tree_listing(root: str) -> dict[str, tuple[str, int]]:
    """Map every relative path under root to (kind, size); kind is d, f or l (with the link target
    length as size). Cheap enough to poll: no file is read."""
    listing: dict[str, tuple[str, int]] = {}
    pending = [""]
    while pending:
        relative_dir = pending.pop()
        try:
            with os.scandir(os.path.join(root, relative_dir)) as entries:
                for entry in entries:
                    relative = os.path.join(relative_dir, entry.name)
                    if entry.is_symlink():
                        listing[relative] = ("l", len(os.readlink(entry.path)))
                    elif entry.is_dir():
                        listing[relative] = ("d", 0)
                        pending.append(relative)
                    else:
                        listing[relative] = ("f", entry.stat().st_size)
        except FileNotFoundError:
            # Renamed or removed while listed (a daemon renaming at the destination, as in W4):
            # the listing is then incomplete, which only means "not converged yet".
            listing[relative_dir + "\0vanished"] = ("?", 0)
    return listing


def trees_identical(source: str, destination: str) -> bool:
    """Same names, kinds, sizes, link targets and file contents."""
    source_listing = tree_listing(source)
    if source_listing != tree_listing(destination):
        return False
    for relative, (kind, _size) in source_listing.items():
        source_path = os.path.join(source, relative)
        destination_path = os.path.join(destination, relative)
        if kind == "l" and os.readlink(source_path) != os.readlink(destination_path):
            return False
        if kind == "f" and read_bytes(source_path) != read_bytes(destination_path):
            return False
    return True


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def wait_converged(source: str, destination: str, rsync_log_path: str, since: float,
                   timeout: float, recheck: float = 0.02) -> tuple[float | None, list[RsyncRun]]:
    """Wait until the destination mirrors the source; return (converged epoch or None, runs since).

    The destination is listed only while no rsync run is in flight, so polling does not compete
    with the daemon for the CPUs (the source does not change meanwhile and is listed once). Once
    they match, the convergence time is the end of the last rsync run (exact, from the wrapper) if
    one ended after the last listing that did not match; otherwise the change was made without rsync
    (a daemon renaming at the destination, lsyncd's ``ssh mv``) and it is the start of the matching
    listing (at most one poll interval plus one listing late).
    """
    deadline = time.monotonic() + timeout
    source_listing = tree_listing(source)
    not_yet = since
    while time.monotonic() < deadline:
        log = read_rsync_log(rsync_log_path)
        if not log.running_pids:
            observed = time.time()
            if tree_listing(destination) == source_listing:
                runs = read_rsync_log(rsync_log_path).finished_since(since)
                explaining = [run.end for run in runs if run.end > not_yet]
                return (max(explaining) if explaining else observed), runs
            not_yet = observed
        time.sleep(recheck)
    return None, read_rsync_log(rsync_log_path).finished_since(since)


# -- statistics --------------------------------------------------------------------------------

def percentile(values: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile, NaNs left out (p50 of [1, 2, 3, 4] is 2)."""
    ordered = sorted(value for value in values if value == value)
    if not ordered:
        return float("nan")
    rank = math.ceil(round(fraction * len(ordered), 9))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def median(values: list[float]) -> float:
    finite = [value for value in values if value == value]
    return statistics.median(finite) if finite else float("nan")
