"""The metrics file: Prometheus text format for node_exporter's textfile collector, made
from the same snapshot as the status file (the counters are the domain's, see
:mod:`pirsyncd.replica.counters`) through prometheus_client's own registry and ``write_to_textfile``
(a temporary file in the same directory, renamed: a scrape never reads half a file).

prometheus_client is imported only when a metrics_file is configured (start-up memory).

    pirsyncd_pending_paths{instance="www",destination="www"} 0.0
    pirsyncd_state{instance="www",destination="www",state="in-sync"} 1.0
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

# Every value the state gauge can take (docs/CONTRACT.md, the status file's "state").
STATES = ("starting", "initial-sync", "in-sync", "syncing", "retrying", "paused", "source-lost", "held", "failed",
          "stopping", "stopped")
WATCH_LIMIT_FILE = "/proc/sys/fs/inotify/max_user_watches"


def destination_views(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """One view per destination: ``snapshot["destinations"]`` when the instance has several,
    else the snapshot itself (its replica's keys are at the top)."""
    views = snapshot.get("destinations")
    return list(views) if isinstance(views, list) and views else [snapshot]


def _watch_limit() -> int | None:
    try:
        with open(WATCH_LIMIT_FILE, encoding="ascii") as stream:
            return int(stream.read().strip())
    except (OSError, ValueError):
        return None


class _SnapshotCollector:
    """A prometheus_client collector (duck-typed) yielding the families of one snapshot."""

    def __init__(self, snapshot: dict[str, Any], core: Any) -> None:
        self.snapshot = snapshot
        self.core = core

    def collect(self) -> Iterator[Any]:
        """The metric families of the snapshot, as prometheus_client's collectors give them."""
        core, snapshot = self.core, self.snapshot
        instance = snapshot.get("instance") or "-"
        gauge, counter = core.GaugeMetricFamily, core.CounterMetricFamily
        per_destination = ["instance", "destination"]

        pending = gauge("pirsyncd_pending_paths", "Distinct paths waiting to be sent.", labels=per_destination)
        state = gauge("pirsyncd_state", "1 for the destination's current state, 0 for the others.",
                      labels=[*per_destination, "state"])
        failing = gauge("pirsyncd_failing_paths", "Source paths rsync cannot send, retried on their own.",
                        labels=per_destination)
        last_sync = gauge("pirsyncd_last_sync_timestamp_seconds", "When the last sync succeeded (epoch).",
                          labels=per_destination)
        oldest = gauge("pirsyncd_oldest_unsent_timestamp_seconds", "When the oldest change not yet at the "
                       "destination was read (epoch; absent when none waits): the lag is time() minus it.",
                       labels=per_destination)
        runs = counter("pirsyncd_rsync_runs", "rsync runs by kind (full, batch), mode and result.",
                       labels=[*per_destination, "kind", "mode", "result"])
        seconds = counter("pirsyncd_rsync_seconds", "Seconds spent in rsync runs.",
                          labels=[*per_destination, "kind", "mode"])
        sent = counter("pirsyncd_sent_bytes", "Bytes rsync sent (its --stats total).", labels=per_destination)
        transferred = counter("pirsyncd_files_transferred", "Regular files rsync transferred.",
                              labels=per_destination)
        deleted = counter("pirsyncd_files_deleted", "Entries rsync deleted at the destination.",
                          labels=per_destination)
        full_syncs = counter("pirsyncd_full_syncs", "Full syncs started, by reason.",
                             labels=[*per_destination, "reason"])
        # While a full sync runs (pirsyncd.replica.progress); absent otherwise.
        ratio = gauge("pirsyncd_full_sync_progress_ratio", "Entries checked of those listed by the running full sync "
                      "(0 to 1), once the total is known.", labels=[*per_destination, "reason"])
        entries_done = gauge("pirsyncd_full_sync_files_done", "Entries the running full sync has checked.",
                             labels=[*per_destination, "reason"])
        entries_total = gauge("pirsyncd_full_sync_files_total", "Entries the running full sync checks in all "
                              "(growing while rsync still lists).", labels=[*per_destination, "reason"])
        full_bytes = gauge("pirsyncd_full_sync_bytes", "Bytes the running full sync has transferred.",
                           labels=[*per_destination, "reason"])
        eta = gauge("pirsyncd_full_sync_eta_seconds", "Seconds the running full sync still needs, once that "
                    "means something.", labels=[*per_destination, "reason"])
        audit_time = gauge("pirsyncd_audit_last_timestamp_seconds", "When the last periodic audit ended (epoch).",
                           labels=per_destination)
        audit_drift = gauge("pirsyncd_audit_drift_entries", "Differences the last periodic audit found, by kind.",
                            labels=[*per_destination, "kind"])
        views = destination_views(snapshot)
        for view in views:
            labels = [instance, view.get("name") or "default"]
            pending.add_metric(labels, view.get("pending") or 0)
            current = snapshot["state"] if view is snapshot or len(views) == 1 else view.get("state")
            for name in STATES:
                state.add_metric([*labels, name], 1.0 if name == current else 0.0)
            failing.add_metric(labels, len(view.get("failing_paths") or []))
            if view.get("last_success"):
                last_sync.add_metric(labels, view["last_success"])
            if view.get("oldest_unsent") is not None:
                oldest.add_metric(labels, view["oldest_unsent"])
            counters = view.get("counters") or {}
            for kind, mode, result, count in counters.get("runs", []):
                runs.add_metric([*labels, kind, mode, result], count)
            for kind, mode, total in counters.get("rsync_seconds", []):
                seconds.add_metric([*labels, kind, mode], total)
            sent.add_metric(labels, counters.get("bytes_sent", 0))
            transferred.add_metric(labels, counters.get("files_transferred", 0))
            deleted.add_metric(labels, counters.get("files_deleted", 0))
            for reason, count in (counters.get("full_syncs") or {}).items():
                full_syncs.add_metric([*labels, reason], count)
            progress = view.get("progress") or {}
            if progress.get("active"):
                with_reason = [*labels, str(progress.get("reason"))]
                if progress.get("percent") is not None:
                    ratio.add_metric(with_reason, progress["percent"] / 100)
                entries_done.add_metric(with_reason, progress.get("files_done") or 0)
                entries_total.add_metric(with_reason, progress.get("files_total") or 0)
                full_bytes.add_metric(with_reason, progress.get("bytes") or 0)
                if progress.get("eta_s") is not None:
                    eta.add_metric(with_reason, progress["eta_s"])
            audit = view.get("audit") or {}
            if audit.get("time"):
                audit_time.add_metric(labels, audit["time"])
            for kind, count in (audit.get("drift") or {}).items():
                audit_drift.add_metric([*labels, kind], count)
        yield from (pending, state, failing, last_sync, oldest, runs, seconds, sent, transferred, deleted, full_syncs,
                    ratio, entries_done, entries_total, full_bytes, eta, audit_time, audit_drift)

        yield self._one(gauge, "pirsyncd_paused", "1 while the instance is paused (pirsyncd pause).",
                        instance, 1.0 if snapshot.get("paused") else 0.0)
        yield self._one(counter, "pirsyncd_inotify_overflows",
                        "Queue overflows of the watcher, inotify's or fanotify's (each one a full sync).",
                        instance, snapshot.get("inotify_overflows", 0))
        yield self._one(gauge, "pirsyncd_watched_directories", "Directories with an inotify watch.",
                        instance, snapshot.get("watched_dirs") or 0)
        if snapshot.get("watch_backend"):
            backend = gauge("pirsyncd_watch_backend", "How the source is watched (1 for the backend in use): inotify "
                            "(a watch per directory) or fanotify (one filesystem mark); reason: why watch_backend = "
                            "auto took inotify (empty otherwise).", labels=["instance", "backend", "reason"])
            backend.add_metric([instance, snapshot["watch_backend"], snapshot.get("watch_backend_reason") or ""], 1.0)
            yield backend
        limit = _watch_limit()
        if limit is not None:
            yield self._one(gauge, "pirsyncd_watch_limit", "The kernel's fs.inotify.max_user_watches.",
                            instance, limit)
        if snapshot.get("last_change"):
            yield self._one(gauge, "pirsyncd_last_change_timestamp_seconds", "When a change was last seen (epoch).",
                            instance, snapshot["last_change"])
        hook_runs = counter("pirsyncd_hook_runs", "Hook calls by hook and result (ok, failed, timeout).",
                            labels=["instance", "hook", "result"])
        hook_failures = counter("pirsyncd_hook_failures", "Hook calls that failed or were killed at hook_timeout.",
                                labels=["instance", "hook"])
        for hook, results in (snapshot.get("hooks") or {}).items():
            for result in ("ok", "failed", "timeout"):
                hook_runs.add_metric([instance, hook, result], results.get(result, 0))
            hook_failures.add_metric([instance, hook], results.get("failed", 0) + results.get("timeout", 0))
        yield from (hook_runs, hook_failures)
        yield self._one(gauge, "pirsyncd_metrics_updated_timestamp_seconds", "When this file was written (epoch).",
                        instance, snapshot.get("updated") or 0)

    @staticmethod
    def _one(family: Any, name: str, documentation: str, instance: str, value: float) -> Any:
        metric = family(name, documentation, labels=["instance"])
        metric.add_metric([instance], value)
        return metric


class MetricsFile:
    """Writes snapshots to ``path``, mode 0644 so node_exporter's user can read it."""

    def __init__(self, path: str) -> None:
        import prometheus_client  # noqa: F401 -- fails here, at start, if it is missing
        from prometheus_client import core

        self.path = path
        self._core = core

    def write(self, snapshot: dict[str, Any]) -> None:
        from prometheus_client import CollectorRegistry, write_to_textfile

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(snapshot, self._core))  # type: ignore[arg-type]
        # The unit's UMask=0027 would leave it unreadable by node_exporter; the loop is the only
        # thread, so the umask can be lowered around this one write.
        previous = os.umask(0o022)
        try:
            write_to_textfile(self.path, registry)
        finally:
            os.umask(previous)
