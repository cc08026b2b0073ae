"""The machine-readable status file, and its readers: ``pirsyncd status`` and ``pirsyncd wait``."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from pirsyncd.config import exitcodes
from pirsyncd.replica.progress import describe_progress


def default_status_path(instance: str) -> str | None:
    """$RUNTIME_DIRECTORY/NAME.json under systemd; /run/pirsyncd/NAME.json for readers."""
    if not instance:
        return None
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return os.path.join(runtime or "/run/pirsyncd", f"{instance}.json")


def write_status(path: str, status: dict[str, Any]) -> None:
    """Replace the status file atomically, so a reader never sees half of it."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(status, stream, indent=1, sort_keys=True)
        stream.write("\n")
    os.replace(temporary, path)


def read_status(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _when(epoch: object) -> str:
    if not isinstance(epoch, (int, float)):
        return "never"
    age = time.time() - epoch
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(epoch))} ({age:.0f} s ago)"


def _watching_lines(status: dict[str, Any]) -> list[str]:
    """How the source is watched: the directories inotify watches; with fanotify, that instead;
    and why auto did not take fanotify, when it did not."""
    if status.get("watch_backend") == "fanotify":
        return ["watching:     fanotify (one filesystem mark, no watch per directory)"]
    lines = [f"watched dirs: {status.get('watched_dirs')}"]
    if status.get("watch_backend_reason"):
        lines.append(f"watching:     inotify, not fanotify: {status['watch_backend_reason']}")
    return lines


def format_status(status: dict[str, Any]) -> str:
    """Status for a person: a few aligned lines."""
    alive = process_alive(status.get("pid"))
    lines = [
        f"instance:     {status.get('instance') or '-'}",
        f"state:        {status.get('state')}" + ("" if alive else "  (daemon not running)"),
        f"status:       {status.get('status_line', '')}",
        *_progress_lines(status),
        f"source:       {status.get('source')}",
        f"destination:  {status.get('destination')}",
        f"pending:      {status.get('pending')}",
        *([f"paused:       since {_when(status.get('paused_since'))}; pirsyncd resume sends what is pending"]
          if status.get("paused") else []),
        *_watching_lines(status),
        f"last success: {_when(status.get('last_success'))}",
        *_restart_lines(status),
    ]
    last_sync = status.get("last_sync")
    if isinstance(last_sync, dict):
        lines.append(f"last sync:    {last_sync.get('kind')} of {last_sync.get('paths')} paths, "
                     f"{last_sync.get('seconds')} s, {last_sync.get('bytes_sent')} bytes sent")
    error = status.get("last_error")
    if isinstance(error, dict):
        lines.append(f"last error:   {_when(error.get('time'))}: {error.get('message')}")
        if error.get("stderr_tail"):
            lines.extend("              " + line for line in str(error["stderr_tail"]).splitlines()[-5:])
    if status.get("deletion_path"):
        way = {"missing-args": "rsync --delete-missing-args",
               "parents": "re-checking each deleted path's parent directory"}.get(status["deletion_path"], "")
        lines.append(f"deletions:    {way or status['deletion_path']}")
    audit = status.get("audit")
    if isinstance(audit, dict):
        lines.append(f"audit:        {_audit_text(audit)}")
    failing = status.get("failing_paths")
    if isinstance(failing, list) and failing:
        lines.append(f"failing:      {status.get('failing')}")
        for entry in failing[:10]:
            if isinstance(entry, dict):
                lines.append(f"              {entry.get('path')}: {entry.get('reason')} "
                             f"(tried {entry.get('attempts')} times)")
    if status.get("next_retry"):
        lines.append(f"next retry:   in {max(0.0, status['next_retry'] - time.time()):.0f} s")
    destinations = [entry for entry in status.get("destinations") or () if isinstance(entry, dict)]
    if len(destinations) > 1:
        lines.append("destinations:")
        for entry in destinations:
            error = entry.get("last_error") if isinstance(entry.get("last_error"), dict) else {}
            lines.append(f"  {entry.get('name')}: {entry.get('state')}, {entry.get('pending')} pending, "
                         f"last success {_when(entry.get('last_success'))}"
                         + (f", last error: {error.get('message')}" if error else ""))
    return "\n".join(lines)


def _progress_lines(status: dict[str, Any]) -> list[str]:
    """The running full sync of each destination, or the last one's end."""
    views = [entry for entry in status.get("destinations") or () if isinstance(entry, dict)] or [status]
    lines = []
    for view in views:
        progress = view.get("progress")
        if not isinstance(progress, dict):
            continue
        name = f"{view.get('name')}: " if len(views) > 1 else ""
        if progress.get("active"):
            lines.append(f"progress:     {name}{describe_progress(progress)}, {progress.get('bytes', 0):,} bytes sent")
        elif progress.get("finished"):
            lines.append(f"full sync:    {name}{progress.get('reason')}, {progress.get('files_total', 0):,} files, "
                         f"{progress.get('bytes', 0):,} bytes sent, done {_when(progress.get('finished'))}")
    return lines


def _audit_text(audit: dict[str, Any]) -> str:
    """The last periodic audit of a destination, for a person: when, what it found, the next one."""
    counts = audit.get("drift") if isinstance(audit.get("drift"), dict) else None
    if audit.get("running"):
        found = "running now"
    elif audit.get("error"):
        found = f"failed: {audit['error']}"
    elif counts is None:
        found = "none yet"
    elif not any(counts.values()):
        found = "identical"
    else:
        total = sum(counts.values())
        found = (f"{total} difference{'' if total == 1 else 's'} ("
                 + ", ".join(f"{count} {kind}" for kind, count in counts.items() if count) + ")")
    if audit.get("slice") and not audit.get("running"):
        found += f" (content slice {audit['slice']})"
    when = f"last {_when(audit.get('time'))}: " if audit.get("time") else ""
    upcoming = audit.get("next")
    after = f"; next in {max(0.0, upcoming - time.time()):.0f} s" if isinstance(upcoming, (int, float)) else ""
    return f"{when}{found}{after}"


def _restart_lines(status: dict[str, Any]) -> list[str]:
    """What the last start did, and how far a restart would look back."""
    lines = []
    start = status.get("start")
    if isinstance(start, dict):
        if start.get("kind") == "warm":
            lines.append(f"last start:   warm, {start.get('changes')} changes found in {start.get('seconds')} s")
        elif start.get("kind") == "full":
            lines.append(f"last start:   full sync ({start.get('reason')})")
        else:
            lines.append("last start:   nothing sent (startup_sync = none)")
    if "watermark" in status:
        if not status.get("watermark") and isinstance(start, dict) and start.get("reason") == "no state_file is set":
            lines.append("watermark:    none (no state_file is set: every start runs a full sync)")
        else:
            lines.append(f"watermark:    {_when(status.get('watermark'))}"
                         + ("" if status.get("watermark") else "; the next start runs a full sync"))
    return lines


def _progress(status: dict[str, Any], destination: str | None) -> dict[str, Any] | None:
    """The part of the status that ``wait`` watches: one destination's, or the whole (all)."""
    if destination is None:
        return status
    for entry in status.get("destinations") or ():
        if isinstance(entry, dict) and entry.get("name") == destination:
            return entry
    return None


def running_status(path: str) -> dict[str, Any] | None:
    """The status of the daemon writing ``path`` while it runs; None when none does (no file yet,
    or the file a stopped or crashed daemon left)."""
    status = read_status(path)
    if status is None or not process_alive(status.get("pid")) or status.get("state") == "stopped":
        return None
    return status


def wait_until_running(path: str, deadline: float, poll: Callable[[float], None] = time.sleep
                       ) -> dict[str, Any] | None:
    """The running daemon's status, waiting for one that is starting to write it until ``deadline``
    (monotonic); None when none came up by then."""
    while True:
        status = running_status(path)
        remaining = deadline - time.monotonic()
        if status is not None or remaining <= 0:
            return status
        poll(min(0.05, remaining))


def wait_until_synced(path: str, timeout: float, poll: Callable[[float], None] = time.sleep,
                      print_error: Callable[[str], None] = print, destination: str | None = None) -> int:
    """Block until every change made before the call is at the destination (every one,
    or the one named). A daemon that is starting (no status file yet, or the one its
    previous run left) is waited for within the same ``timeout``.

    Sends SIGUSR1 (a sync barrier): the daemon drains inotify, so every change made
    before this call is queued, and reports the change sequence number that covers
    them; then this waits for ``synced_seq`` to reach it.
    """
    deadline = time.monotonic() + timeout
    status = running_status(path)
    if status is None:
        print_error(f"pirsyncd wait: no pirsyncd is running yet; waiting up to {timeout:g} s for one to write {path}")
        status = wait_until_running(path, deadline, poll)
    if status is None:
        print_error(f"pirsyncd wait: no running pirsyncd wrote {path} within {timeout:g} s; start it first")
        return exitcodes.UNAVAILABLE
    if _progress(status, destination) is None:
        names = ", ".join(str(entry.get("name")) for entry in status.get("destinations") or ())
        print_error(f"pirsyncd wait: no destination {destination!r} (known: {names or 'none'})")
        return exitcodes.USAGE
    requests_before = int(status.get("barrier_requests", 0))
    target: int | None = None
    try:
        os.kill(int(status["pid"]), signal.SIGUSR1)
    except PermissionError:
        target = int(status.get("change_seq", 0))  # cannot ask: settle for what it has seen
    while True:
        status = read_status(path) or {}
        if target is None and int(status.get("barrier_requests", 0)) > requests_before:
            target = int(status.get("barrier_seq", 0))
        progress = _progress(status, destination) or {}
        if target is not None and int(progress.get("synced_seq", -1)) >= target:
            if progress.get("failing"):
                print_error(f"pirsyncd wait: in sync except {progress['failing']}")
            return exitcodes.OK
        if not process_alive(status.get("pid")):
            print_error("pirsyncd wait: the daemon stopped before the mirror was in sync")
            return exitcodes.UNAVAILABLE
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print_error(f"pirsyncd wait: not in sync after {timeout:g} s (state: {progress.get('state')}, "
                        f"pending: {progress.get('pending')})")
            return exitcodes.TEMPFAIL
        poll(min(0.05, remaining))


def wait_for_pause(path: str, paused: bool, timeout: float, poll: Callable[[float], None] = time.sleep,
                   print_error: Callable[[str], None] = print) -> int:
    """After the pause file was created (``paused``) or removed: SIGUSR2 to the daemon, then wait
    until its status says so. Not running: the file alone decides at its next start (exit 0)."""
    word = "paused" if paused else "resumed"
    status = read_status(path)
    if status is None or not process_alive(status.get("pid")) or status.get("state") == "stopped":
        print_error(f"pirsyncd: not running; it starts {'paused' if paused else 'unpaused'} next time")
        return exitcodes.OK
    try:
        os.kill(int(status["pid"]), signal.SIGUSR2)
    except PermissionError:
        print_error(f"pirsyncd: not allowed to signal pid {status['pid']}; {word} at its next reload or start")
        return exitcodes.UNAVAILABLE
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(path) or {}
        if bool(status.get("paused")) == paused:
            return exitcodes.OK
        if not process_alive(status.get("pid")):
            print_error(f"pirsyncd: the daemon stopped; it starts {'paused' if paused else 'unpaused'} next time")
            return exitcodes.OK
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print_error(f"pirsyncd: the daemon did not confirm it {word} within {timeout:g} s")
            return exitcodes.TEMPFAIL
        poll(min(0.05, remaining))
