"""What the daemon tells people and scripts about its state: the STATUS= line and the
status file (and the metrics file), all made from a snapshot the service hands over. The
reporter owns no domain state: it formats what it is given and throttles the writes. The
journal lines of each rsync run: :mod:`pirsyncd.replica.runlog`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Hashable
from typing import Any, Protocol

from pirsyncd.edges import notify
from pirsyncd.ops.status import write_status
from pirsyncd.replica.progress import describe_progress

log = logging.getLogger("pirsyncd")

PUBLISH_INTERVAL = 1.0
# A change in any of these is worth telling readers about.
_WATCHED_KEYS = ("state", "pending", "watched_dirs", "synced_seq", "barrier_requests", "warning", "next_retry",
                 "failing", "deletion_path", "heartbeat", "paused", "counters", "hooks", "inotify_overflows",
                 "oldest_unsent", "progress", "audit", "watch_backend")


class MetricsWriter(Protocol):
    """pirsyncd.ops.metrics.MetricsFile (imported only when a metrics_file is set)."""

    path: str

    def write(self, snapshot: dict[str, Any]) -> None: ...


def _clock(epoch: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) if epoch else "never"


# The state shown for several destinations together: the first that any of them is in.
_STATE_PRECEDENCE = ("initial-sync", "retrying", "held", "failed", "syncing", "in-sync")


def combine_destinations(views: list[dict[str, Any]]) -> dict[str, Any]:
    """The status of several destinations as one: the first one's keys for a single
    destination; else the earliest progress (``synced_seq``, ``last_success``) and the
    worst state, plus ``destinations`` with each one's own view."""
    first = views[0]
    if len(views) == 1:
        return {**first, "destinations": views}
    states = [view["state"] for view in views]
    state = "failed" if all(each == "failed" for each in states) else next(
        candidate for candidate in _STATE_PRECEDENCE if candidate in states)
    successes = [view["last_success"] for view in views]
    retries = [view["next_retry"] for view in views if view["next_retry"]]
    syncs = [view["last_sync"] for view in views if view["last_sync"]]
    errors = [view["last_error"] for view in views if view["last_error"]]
    unsent = [view["oldest_unsent"] for view in views if view.get("oldest_unsent") is not None]
    failing = [f"{view['name']}: {view['failing']}" for view in views if view["failing"]]
    return {
        **first, "state": state, "destination": ", ".join(view["destination"] for view in views),
        "pending": max(view["pending"] for view in views),
        "synced_seq": min(view["synced_seq"] for view in views),
        "last_success": None if None in successes else min(successes),
        "last_sync": max(syncs, key=lambda entry: entry["time"]) if syncs else None,
        "last_error": max(errors, key=lambda entry: entry["time"]) if errors else None,
        "next_retry": min(retries) if retries else None,
        "oldest_unsent": min(unsent) if unsent else None, "failing": "; ".join(failing) or None,
        "failing_paths": [dict(entry, destination=view["name"]) for view in views for entry in view["failing_paths"]],
        "files_sent_in_job": sum(view["files_sent_in_job"] for view in views),
        "warning": "; ".join(f"{view['name']}: {view['warning']}" for view in views if view["warning"]) or None,
        "progress": next((view["progress"] for view in views if (view.get("progress") or {}).get("active")), None),
        "destinations": views,
    }


def _destinations_line(snapshot: dict[str, Any]) -> str:
    """'3 of 4 in sync; web4: retrying (connection refused) · 12 pending'."""
    views = snapshot["destinations"]
    good = sum(view["state"] == "in-sync" for view in views)
    others = []
    for view in views:
        if view["state"] == "in-sync":
            continue
        why = (view.get("last_error") or {}).get("message", "") if view["state"] in ("retrying", "failed") else ""
        reason = view.get("reason") or why
        progress = view.get("progress") or {}
        if progress.get("active"):
            others.append(f"{view['name']}: {describe_progress(progress)}")
            continue
        others.append(f"{view['name']}: {view['state'].replace('-', ' ')}" + (f" ({reason})" if reason else ""))
    text = f"{good} of {len(views)} in sync" + "".join(f"; {other}" for other in others)
    drift = "".join(f" · {view['name']}: {_drift(view)}" for view in views if _drift(view))
    return f"{text} · {_watching(snapshot)} · {snapshot['pending']:,} pending{drift}"


def _drift(view: dict[str, Any]) -> str:
    """'audit found 3 differences' when the destination's last periodic audit found drift, else ''."""
    counts = (view.get("audit") or {}).get("drift") or {}
    total = sum(counts.values())
    return f"audit found {total} difference{'' if total == 1 else 's'}" if total else ""


def _watching(snapshot: dict[str, Any]) -> str:
    """How the source is watched, for the status line: '1,234 dirs watched' (inotify), or
    'watched by fanotify' (no directory is watched one by one).

    >>> _watching({"watched_dirs": 1234}), _watching({"watched_dirs": 0, "watch_backend": "fanotify"})
    ('1,234 dirs watched', 'watched by fanotify')
    """
    if snapshot.get("watch_backend") == "fanotify":
        return "watched by fanotify"
    return f"{snapshot['watched_dirs']:,} dirs watched"


def status_line(snapshot: dict[str, Any]) -> str:
    """The one line for STATUS= and ``status_line``, from a status snapshot."""
    state = snapshot["state"]
    if len(snapshot.get("destinations") or ()) > 1 and state not in ("source-lost", "stopping", "stopped"):
        return _destinations_line(snapshot)
    pending = f"{snapshot['pending']:,} pending"
    warning = snapshot.get("warning")
    if state == "paused":
        return (f"paused since {_clock(snapshot.get('paused_since'))} (pirsyncd resume to send) · "
                f"{_watching(snapshot)} · {pending}")
    if warning and state == "source-lost":
        return f"source lost: {warning} · mirror kept as it was · {pending}"
    progress = snapshot.get("progress") or {}
    if progress.get("active") and state in ("initial-sync", "syncing"):
        return f"{describe_progress(progress)} · {_watching(snapshot)} · {pending}"
    if state == "initial-sync":
        return f"initial sync: {snapshot['files_sent_in_job']:,} files sent · {_watching(snapshot)}"
    if state == "retrying" and snapshot.get("next_retry"):
        reason = (snapshot.get("last_error") or {}).get("message", "sync failed")
        wait = max(0.0, snapshot["next_retry"] - time.time())
        return (f"destination failing since {_clock(snapshot.get('retry_since'))}, retry in {wait:.0f} s "
                f"({reason}) · {pending}")
    if state == "failed":
        return f"failed: {(snapshot.get('last_error') or {}).get('message', '')} · {pending}"
    last = ""
    last_sync = snapshot.get("last_sync")
    if last_sync:
        last = f" · last sync {_clock(last_sync['time'])} ({last_sync['paths']} paths, {last_sync['seconds']} s)"
    text = f"{state.replace('-', ' ')} · {_watching(snapshot)}{last} · {pending}"
    if snapshot.get("failing"):
        text = f"{text} · {snapshot['failing']}"
    if _drift(snapshot):
        text = f"{text} · {_drift(snapshot)}"
    return f"{text} · {warning}" if warning else text


class Reporter:
    """Publishes snapshots to STATUS= and the status file: at once when the state changes,
    otherwise at most once a second."""

    def __init__(self, path: str | None, metrics: MetricsWriter | None = None) -> None:
        self.path = path
        self.metrics = metrics
        self._published: tuple[Any, ...] | None = None
        self._state_key: Hashable = None  # what the published state was made of (see throttled)
        self._dirty_since: float | None = None
        self._last_publish = 0.0
        self.line = ""

    def due(self) -> float | None:
        """When a throttled update is due (None when nothing is waiting)."""
        return None if self._dirty_since is None else self._last_publish + PUBLISH_INTERVAL

    def throttled(self, state_key: Hashable, now: float) -> bool:
        """Whether an update now would wait anyway: what the state is made of (``state_key``)
        is as last published, less than PUBLISH_INTERVAL ago. Then it is marked due, and the
        caller need not make a snapshot (which a loop woken by every chunk of rsync's output
        would otherwise make at every turn)."""
        if self._published is None or state_key != self._state_key or now - self._last_publish >= PUBLISH_INTERVAL:
            return False
        self._dirty_since = self._dirty_since or now
        return True

    def publish(self, snapshot: dict[str, Any], now: float, force: bool = False, state_key: Hashable = None) -> None:
        """Write the status file, the metrics file and STATUS= when something readers watch
        changed (``force``: at once; otherwise throttled, the rest when :meth:`due`).
        ``state_key``: what the snapshot's state is made of, for :meth:`throttled`."""
        key = (*(snapshot.get(name) for name in _WATCHED_KEYS), (snapshot.get("last_sync") or {}).get("time"))
        if key == self._published and not force:
            self._dirty_since = None
            return
        if (not force and self._published is not None and key[0] == self._published[0]
                and now - self._last_publish < PUBLISH_INTERVAL):
            self._dirty_since = self._dirty_since or now
            return
        self._published, self._dirty_since, self._last_publish = key, None, now
        self._state_key = state_key
        self.line = snapshot["status_line"] = status_line(snapshot)
        notify.send(f"STATUS={self.line}")
        if self.path:
            try:
                write_status(self.path, {**snapshot, "pid": os.getpid(), "updated": time.time()})
            except OSError as error:
                log.warning("cannot write the status file %s: %s", self.path, error.strerror)
                self.path = None
        if self.metrics is not None:
            try:
                self.metrics.write({**snapshot, "updated": time.time()})
            except OSError as error:
                log.warning("cannot write the metrics file %s: %s; no more metrics until a restart",
                            self.metrics.path, error.strerror)
                self.metrics = None
