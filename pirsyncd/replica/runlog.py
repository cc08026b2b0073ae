"""The journal lines of a replica's rsync runs: one line per run with structured fields
(PIRSYNCD_RSYNC_STATUS=23 ...), and rsync's own output (to the journal, nowhere, or a file)."""

from __future__ import annotations

import logging
import time
from typing import IO, TYPE_CHECKING, Any

from pirsyncd.replica.rsync import Outcome, RunMode

if TYPE_CHECKING:
    from pirsyncd.replica.job import RunRecord

log = logging.getLogger("pirsyncd")
rsync_output_log = logging.getLogger("pirsyncd.rsync")


def log_run(record: RunRecord, instance: str, destination: str = "", prefix: str = "") -> dict[str, Any]:
    """Log one finished rsync run and return its entry for the status (last_sync or last_error)."""
    result, verdict, figures = record.result, record.verdict, record.figures
    kind = "full" if record.mode == RunMode.FULL else "batch"
    bytes_sent = figures.get("bytes_sent", 0)
    files = figures.get("files_transferred", 0)
    fields = {"PIRSYNCD_KIND": kind, "PIRSYNCD_MODE": record.mode.value, "PIRSYNCD_PATHS": record.paths,
              "PIRSYNCD_BYTES": bytes_sent, "PIRSYNCD_FILES": files,
              "PIRSYNCD_SECONDS": f"{result.seconds:.3f}", "PIRSYNCD_RSYNC_STATUS": result.status,
              "PIRSYNCD_INSTANCE": instance or "-"}
    if destination:
        fields["PIRSYNCD_DESTINATION"] = destination
    what = prefix + ("full sync" if record.mode == RunMode.FULL else f"{record.mode.value} of {record.paths} paths")
    if verdict.outcome in (Outcome.OK, Outcome.VANISHED):
        log.info("%s sent in %.2f s: %d files, %s bytes (rsync status %d)", what, result.seconds, files,
                 f"{bytes_sent:,}", result.status, extra=fields)
        return {"time": time.time(), "kind": kind, "paths": record.paths, "seconds": round(result.seconds, 3),
                "bytes_sent": bytes_sent, "files": files, "rsync_status": result.status}
    message = f"{what} failed after {result.seconds:.2f} s: {verdict.meaning} (rsync status {result.status})"
    tail = result.stderr_tail
    log.error("%s%s", message, f"; rsync said: {tail.splitlines()[-1]}" if tail else "", extra=fields)
    return {"time": time.time(), "rsync_status": result.status, "message": message, "fix": verdict.fix,
            "stderr_tail": tail[-2000:]}


class RsyncOutputLog:
    """Where rsync's own output goes: the journal, nowhere, or a file (``rsync_log``)."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._stream: IO[str] | None = None

    def reopen(self, destination: str) -> None:
        """A reload may name another file: close the old one."""
        if destination != self.destination:
            self.close()
            self.destination = destination

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def write(self, output: str, stderr_tail: str) -> None:
        """Keep one run's output (its stats lines left out) where ``rsync_log`` says."""
        if self.destination == "none":
            return
        lines = [line for line in output.splitlines() if line.strip() and not _is_stats_line(line)]
        lines += stderr_tail.splitlines()
        if not lines:
            return
        if self.destination == "journal":
            for line in lines[-200:]:
                rsync_output_log.info("rsync: %s", line)
            return
        try:
            if self._stream is None:
                self._stream = open(self.destination, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._stream.write("".join(f"{stamp} {line}\n" for line in lines))
            self._stream.flush()
        except OSError as error:
            log.warning("cannot write rsync_log %s: %s", self.destination, error.strerror)


def _is_stats_line(line: str) -> bool:
    return line.split(":", 1)[0].strip() in _STATS_LABELS or line.startswith(("sent ", "total size is"))


_STATS_LABELS = frozenset({
    "Number of files", "Number of created files", "Number of deleted files",
    "Number of regular files transferred", "Total file size", "Total transferred file size",
    "Literal data", "Matched data", "File list size", "File list generation time",
    "File list transfer time", "Total bytes sent", "Total bytes received",
})
