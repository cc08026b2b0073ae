"""What the daemon tells people and scripts: STATUS= lines, the status file and one
journal line per rsync run with structured fields (PIRSYNCD_RSYNC_STATUS=23 ...)."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from pirsyncd import notify, rsync
from pirsyncd.status import default_status_path, write_status

if TYPE_CHECKING:
    from pirsyncd.config import Config
    from pirsyncd.jobs import SyncJob
    from pirsyncd.pending import Batch

log = logging.getLogger("pirsyncd")
rsync_output_log = logging.getLogger("pirsyncd.rsync")

PUBLISH_INTERVAL = 1.0


def _clock(epoch: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) if epoch else "never"


class StatusReport:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.path = config.status_file or default_status_path(config.instance)
        self.state = "starting"
        self.watched_dirs = 0
        self.change_seq = 0
        self.synced_seq = -1
        self.barrier_requests = 0
        self.barrier_seq = 0
        self.last_success: float | None = None
        self.last_sync: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self.next_retry: float | None = None
        self.retry_since: float | None = None
        self.warning: str | None = None
        self.files_sent_in_job = 0
        self.job_kind = ""
        self.job_seq = 0
        self._published: tuple[Any, ...] | None = None
        self._dirty_since: float | None = None
        self._last_publish = 0.0
        self._pending = 0
        self._heartbeat = time.time()
        self._rsync_log_stream: Any = None
        self.deletion_path: str | None = None  # "missing-args" or "parents", once decided
        self.source_identity: Any = None
        self.failing_summary = ""
        self.failing_paths: list[dict[str, Any]] = []

    # -- events from the service --------------------------------------------------
    def job_started(self, batch: Batch) -> None:
        self.job_kind = "full" if batch.full else "batch"
        self.job_seq = batch.change_seq
        self.files_sent_in_job = 0
        if self.state not in ("initial-sync", "retrying", "source-lost"):
            self.state = "syncing"

    def job_succeeded(self, job: SyncJob, pending: int, complete: bool = True) -> None:
        if complete:
            self.synced_seq = max(self.synced_seq, job.batch.change_seq)
        self.last_success = time.time()
        self.next_retry = None
        self.retry_since = None
        self.state = "in-sync"
        self.publish(pending, force=True)

    def retrying(self, verdict: rsync.Verdict, next_retry: float) -> None:
        self.state = "retrying"
        self.next_retry = next_retry
        if self.retry_since is None:
            self.retry_since = time.time()
        self.publish(self._pending, force=True)

    def barrier(self, work_outstanding: bool) -> None:
        """A sync barrier: changes up to change_seq must reach the destination."""
        self.barrier_requests += 1
        self.barrier_seq = self.change_seq
        if not work_outstanding and self.synced_seq >= 0:
            self.synced_seq = self.change_seq  # nothing pending: everything seen is there
        self.publish(self._pending, force=True)

    def heartbeat(self) -> None:
        self._heartbeat = time.time()
        self.publish(self._pending, force=True)

    def run_finished(self, mode: str, paths: int, seconds: float, status: int, verdict: rsync.Verdict,
                     figures: dict[str, int], stderr_tail: str, output: str) -> None:
        kind = "full" if mode == rsync.FULL else "batch"
        bytes_sent = figures.get("bytes_sent", 0)
        files = figures.get("files_transferred", 0)
        self.files_sent_in_job += files
        fields = {"PIRSYNCD_KIND": kind, "PIRSYNCD_MODE": mode, "PIRSYNCD_PATHS": paths,
                  "PIRSYNCD_BYTES": bytes_sent, "PIRSYNCD_FILES": files,
                  "PIRSYNCD_SECONDS": f"{seconds:.3f}", "PIRSYNCD_RSYNC_STATUS": status,
                  "PIRSYNCD_INSTANCE": self.config.instance or "-"}
        what = "full sync" if mode == rsync.FULL else f"{mode} of {paths} paths"
        if verdict.outcome in (rsync.OK, rsync.VANISHED):
            log.info("%s sent in %.2f s: %d files, %s bytes (rsync status %d)", what, seconds, files,
                     f"{bytes_sent:,}", status, extra=fields)
            self.last_sync = {"time": time.time(), "kind": kind, "paths": paths, "seconds": round(seconds, 3),
                              "bytes_sent": bytes_sent, "files": files, "rsync_status": status}
        else:
            message = f"{what} failed after {seconds:.2f} s: {verdict.meaning} (rsync status {status})"
            log.error("%s%s", message, f"; rsync said: {stderr_tail.splitlines()[-1]}" if stderr_tail else "",
                      extra=fields)
            self.last_error = {"time": time.time(), "rsync_status": status, "message": message,
                               "fix": verdict.fix, "stderr_tail": stderr_tail[-2000:]}
        self._log_rsync_output(output, stderr_tail)

    def _log_rsync_output(self, output: str, stderr_tail: str) -> None:
        destination = self.config.rsync_log
        if destination == "none":
            return
        lines = [line for line in output.splitlines() if line.strip() and not _is_stats_line(line)]
        lines += stderr_tail.splitlines()
        if not lines:
            return
        if destination == "journal":
            for line in lines[-200:]:
                rsync_output_log.info("rsync: %s", line)
            return
        try:
            if self._rsync_log_stream is None:
                self._rsync_log_stream = open(destination, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._rsync_log_stream.write("".join(f"{stamp} {line}\n" for line in lines))
            self._rsync_log_stream.flush()
        except OSError as error:
            log.warning("cannot write rsync_log %s: %s", destination, error.strerror)

    # -- output ----------------------------------------------------------------------
    def status_line(self) -> str:
        pending = f"{self._pending:,} pending"
        if self.warning and self.state == "source-lost":
            return f"source lost: {self.warning} · mirror kept as it was · {pending}"
        if self.state == "initial-sync":
            return f"initial sync: {self.files_sent_in_job:,} files sent · {self.watched_dirs:,} dirs watched"
        if self.state == "retrying" and self.next_retry:
            reason = (self.last_error or {}).get("message", "sync failed")
            wait = max(0.0, self.next_retry - time.time())
            return (f"destination failing since {_clock(self.retry_since)}, retry in {wait:.0f} s "
                    f"({reason}) · {pending}")
        if self.state == "failed":
            return f"failed: {(self.last_error or {}).get('message', '')} · {pending}"
        last = ""
        if self.last_sync:
            last = (f" · last sync {_clock(self.last_sync['time'])} ({self.last_sync['paths']} paths, "
                    f"{self.last_sync['seconds']} s)")
        text = f"{self.state.replace('-', ' ')} · {self.watched_dirs:,} dirs watched{last} · {pending}"
        if self.failing_summary:
            text = f"{text} · {self.failing_summary}"
        return f"{text} · {self.warning}" if self.warning else text

    def snapshot(self) -> dict[str, Any]:
        return {
            "instance": self.config.instance, "pid": os.getpid(), "state": self.state,
            "pending": self._pending, "watched_dirs": self.watched_dirs, "source": self.config.source,
            "destination": self.config.destination.text, "last_success": self.last_success,
            "last_sync": self.last_sync, "last_error": self.last_error, "next_retry": self.next_retry,
            "updated": time.time(), "heartbeat": self._heartbeat, "status_line": self.status_line(),
            "change_seq": self.change_seq, "synced_seq": self.synced_seq,
            "barrier_requests": self.barrier_requests, "barrier_seq": self.barrier_seq,
            "warning": self.warning, "deletion_path": self.deletion_path,
            "failing_paths": self.failing_paths, "failing": self.failing_summary or None,
            "source_identity": None if self.source_identity is None else {
                "device": self.source_identity.device, "inode": self.source_identity.inode,
                "mount_id": self.source_identity.mount_id},
        }

    def publish_due(self) -> float | None:
        """When a throttled update is due (None when nothing is waiting)."""
        return None if self._dirty_since is None else self._last_publish + PUBLISH_INTERVAL

    def publish(self, pending: int, force: bool = False) -> None:
        """Update STATUS= and the status file when something a reader sees has changed;
        at most once a second unless ``force`` (state changes are always forced)."""
        self._pending = pending
        key = (self.state, pending, self.watched_dirs, self.synced_seq, self.barrier_requests,
               self.last_sync and self.last_sync["time"], self.warning, self.next_retry, self.failing_summary,
               self.deletion_path)
        now = time.monotonic()
        if key == self._published and not force:
            self._dirty_since = None
            return
        if not force and key[0] == (self._published or ("",))[0] and now - self._last_publish < PUBLISH_INTERVAL:
            self._dirty_since = self._dirty_since or now
            return
        self._published = key
        self._dirty_since = None
        self._last_publish = now
        notify.send(f"STATUS={self.status_line()}")
        if self.path:
            try:
                write_status(self.path, self.snapshot())
            except OSError as error:
                log.warning("cannot write the status file %s: %s", self.path, error.strerror)
                self.path = None


def _is_stats_line(line: str) -> bool:
    return line.split(":", 1)[0].strip() in _STATS_LABELS or line.startswith(("sent ", "total size is"))


_STATS_LABELS = frozenset({
    "Number of files", "Number of created files", "Number of deleted files",
    "Number of regular files transferred", "Total file size", "Total transferred file size",
    "Literal data", "Matched data", "File list size", "File list generation time",
    "File list transfer time", "Total bytes sent", "Total bytes received",
})
