"""Find and stop the processes a test started, always by PID (never by name).

    >>> parent_pid(os.getpid()) == os.getppid()
    True
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from tests.support.trees import real_directories

STOP_TIMEOUT = 10.0


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` from /proc/PID/stat, or None once it has exited."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    return int(stat.rpartition(")")[2].split()[1])


def is_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (SIGSTOP: state ``T`` in /proc/PID/stat)."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "T"


def _parent_pids() -> dict[int, int]:
    """Map every visible PID to its parent PID."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (parent := parent_pid(int(entry))) is not None:
            parents[int(entry)] = parent
    return parents


def child_pids(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid``."""
    return sorted(child for child, parent in _parent_pids().items() if parent == pid)


def descendant_pids(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` in the process tree, parents before children."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_pids().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop(0)
        for child in children.get(current, []):
            found.append(child)
            frontier.append(child)
    return found


def stop_process_tree(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Stop ``process`` and every process it forked, each by PID.

    The process is frozen first (SIGSTOP) so that it cannot fork a new child (a server's
    connection handler, a daemon's next rsync) between the moment its children are listed and
    the moment they are killed.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGSTOP)
    for child in descendant_pids(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
        os.kill(process.pid, signal.SIGCONT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, wait up to ``timeout`` seconds, then :func:`stop_process_tree`; return the exit status.

    A process that exited already is only reaped.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process_tree(process)
    return process.wait()


def inotify_watches(pid: int) -> int:
    """The watches a process holds: one ``inotify wd:`` line per watch in /proc/PID/fdinfo."""
    return len(inotify_watched_inodes(pid))


def _fdinfo_lines(pid: int, link: str, prefix: str) -> list[str]:
    """The /proc/PID/fdinfo lines starting with ``prefix`` of the process's descriptors that
    are ``link`` (``anon_inode:inotify``, ``anon_inode:[fanotify]``); descriptors closed
    meanwhile are skipped."""
    lines = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") != link:
                continue
            with open(f"/proc/{pid}/fdinfo/{name}", encoding="ascii") as info:
                lines += [line for line in info if line.startswith(prefix)]
        except OSError:
            continue
    return lines


def inotify_watched_inodes(pid: int) -> list[int]:
    """The inode number of each watch a process holds (its ``inotify wd: ... ino:HEX`` lines
    in /proc/PID/fdinfo), one entry per watch."""
    return [int(line.split(" ino:")[1].split()[0], 16)
            for line in _fdinfo_lines(pid, "anon_inode:inotify", "inotify wd:")]


def fanotify_marked_devices(pid: int) -> list[int]:
    """The file systems (as ``st_dev``) a process holds fanotify filesystem marks on: its
    ``fanotify sdev:HEX`` lines in /proc/PID/fdinfo (the kernel's dev_t: major << 20 | minor)."""
    devices = []
    for line in _fdinfo_lines(pid, "anon_inode:[fanotify]", "fanotify sdev:"):
        kernel_device = int(line.split("sdev:")[1].split()[0], 16)
        devices.append(os.makedev(kernel_device >> 20, kernel_device & 0xFFFFF))
    return devices


def unwatched_directories(source: str | os.PathLike[str], inotify_fd: int) -> set[str]:
    """The real directories below ``source`` (relative paths, '' for itself, symlinks not
    followed) that the inotify instance ``inotify_fd`` of this process has no watch on, by inode."""
    with open(f"/proc/self/fdinfo/{inotify_fd}", encoding="ascii") as info:
        watched = {int(line.split("ino:")[1].split()[0], 16) for line in info if line.startswith("inotify wd:")}
    return {path for path in real_directories(source) if os.lstat(os.path.join(source, path)).st_ino not in watched}


def watched_inode_count(inotify_fd: int) -> int:
    """How many watches the inotify instance ``inotify_fd`` of this process holds."""
    with open(f"/proc/self/fdinfo/{inotify_fd}", encoding="ascii") as info:
        return sum(line.startswith("inotify wd:") for line in info)

