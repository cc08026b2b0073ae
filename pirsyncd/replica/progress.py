"""How far a full sync is: rsync's ``--info=progress2`` output read as it comes, and the figures
made of it (pure: the clock is passed in).

Where the figures come from. rsync builds the file list of a full sync anyway and reports, with
``--info=progress2`` (run with ``LC_ALL=C``, so numbers are ``1,234,567``), one line per update,
each ending in ``\\r``::

      1,234,567  31%   95.37MB/s    0:00:12 (xfr#123, ir-chk=1000/5000)

the bytes transferred so far, then the entries checked of the file list: ``ir-chk=M/T`` while
incremental recursion still adds directories (T grows), ``to-chk=M/T`` once the list is complete,
M being the entries left to check. The watch walk was not chosen: it never lists a directory
without subdirectories (its link count tells it has none: a stat instead of a listing), so it
does not see the files, and counting them would cost a listing of every leaf at every walk.
rsync's own percent was not chosen either: it is the bytes *transferred* over the list's total
size, so a full sync of a tree that is mostly there ends at a few percent.

So the percent is entries checked over entries listed, shown once the total means something:
rsync's list is complete, or an earlier full sync of this destination since the daemon started
counted the tree (its total is the estimate while rsync still lists; not kept over a restart).
The figures never go backwards (a retried full sync goes on from the figures of the attempt
before), the percent stays below 100 until the sync has succeeded, and an ETA is given only
after ``ETA_AFTER`` seconds and 1 %, from the rate of entries checked over the last
``RATE_WINDOW`` seconds. rsync's output feeds only these figures, never the watchdog (that is
the loop's own timer).

    >>> parser = ProgressParser()
    >>> line = b"\\r     20,000  0%  1.00MB/s  0:00:00 (xfr#1, to-chk=9/12)\\r"
    >>> kept, sample = parser.feed(line + b"Number of files: 12\\n")
    >>> kept, sample
    (b'Number of files: 12\\n', ProgressSample(bytes_done=20000, checked=3, listed=12, list_complete=True))
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

ETA_AFTER = 10.0  # seconds of a full sync before an ETA is given
RATE_WINDOW = 30.0  # seconds of samples the rates are measured over
_PROGRESS = re.compile(rb"^\s*([\d,]+)\s+(\d+)%\s+\S+/s\s+[\d:]+(?:\s+\(xfr#\d+, (ir|to)-chk=(\d+)/(\d+)\))?\s*$")
# What a chunk loses for the log, found in one pass of the regular expression engine (rsync
# prints a line per file: a Python loop over them cost ~4 us a file, as much as a third of a
# full sync's CPU on a tree of small files): a segment (text up to and with a \r or \n) that
# is a progress line, or a bare \r.
_TAKEN_OUT = re.compile(rb"(?:^|(?<=[\r\n]))(?:\r|[ \t]*[\d,]+[ \t]+\d+%[ \t]+\S+/s[ \t]+[\d:]+"
                        rb"(?:[ \t]+\(xfr#\d+, (?:ir|to)-chk=\d+/\d+\))?[ \t]*(?:[\r\n]|\Z))")
_MAX_PARTIAL = 1 << 16  # an unterminated segment longer than this is not a progress line: kept as it is


@dataclasses.dataclass(frozen=True)
class ProgressSample:
    """One progress2 line: bytes transferred, entries checked of those listed, and whether the
    list is complete (``to-chk``) or still growing (``ir-chk``)."""

    bytes_done: int
    checked: int
    listed: int
    list_complete: bool


class ProgressParser:
    """Reads rsync's stdout chunk by chunk: the progress lines are taken out (their latest is
    returned), everything else is kept, byte for byte, for the run's log and its ``--stats``."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> tuple[bytes, ProgressSample | None]:
        """One chunk of output (b"" at the end): what to keep, and the latest sample in it: the
        last progress line's bytes, with the file counts of the last line in the chunk that
        has them."""
        text = self._partial + data
        if data:
            cut = max(text.rfind(b"\r"), text.rfind(b"\n")) + 1
            if len(text) - cut > _MAX_PARTIAL:
                cut = len(text)
            text, self._partial = text[:cut], text[cut:]
        else:
            self._partial = b""
        return _TAKEN_OUT.sub(b"", text), _latest_sample(text)


def _segments_backwards(text: bytes, end: int) -> Iterator[tuple[int, bytes]]:
    """The segments of ``text[:end]`` (each up to and with its \r or \n), last first, with
    where each starts."""
    while end > 0:
        start = max(text.rfind(b"\r", 0, end - 1), text.rfind(b"\n", 0, end - 1)) + 1
        yield start, text[start:end]
        end = start


def _latest_sample(text: bytes) -> ProgressSample | None:
    """The sample the last progress line of ``text`` makes (None without one). Read from the
    end: only the last lines of a chunk are looked at, however many it holds."""
    for start, segment in _segments_backwards(text, len(text)):
        last = _PROGRESS.match(segment.rstrip(b"\r\n"))
        if last is None:
            continue
        bytes_done = int(last[1].replace(b",", b""))
        if last[3] is None:  # no file counts: those of the last line before it that has them
            counted = _last_counted(text, start)
            if counted is None:
                return ProgressSample(bytes_done, 0, 0, False)
            last = counted
        left, listed = int(last[4]), int(last[5])
        return ProgressSample(bytes_done, max(0, listed - left), listed, last[3] == b"to")
    return None


def _last_counted(text: bytes, end: int) -> re.Match[bytes] | None:
    """The last progress line with file counts in ``text[:end]``."""
    found = text.rfind(b"-chk=", 0, end)
    while found >= 0:
        segment_end = min((position for position in (text.find(b"\r", found), text.find(b"\n", found))
                           if position >= 0), default=len(text) - 1) + 1
        start, segment = next(_segments_backwards(text, segment_end))
        match = _PROGRESS.match(segment.rstrip(b"\r\n"))
        if match is not None and match[3] is not None:
            return match
        found = text.rfind(b"-chk=", 0, start)
    return None


class FullSyncProgress:
    """The figures of one full sync of one destination (``reason``: why it runs), across its
    attempts, from the samples of its FULL runs. ``expected_total``: entries an earlier full sync
    of this destination listed, the estimate while rsync's list is still growing."""

    def __init__(self, reason: str, now: float, wall_offset: float, expected_total: int | None = None) -> None:
        self.reason = reason
        self.started = now
        self.wall_offset = wall_offset  # wall clock minus the clock passed in
        self.expected_total = expected_total
        self.checked = 0
        self.listed = 0
        self.list_complete = False
        self.bytes_before = 0  # bytes of the attempts before this one
        self.bytes_done = 0
        self.percent: int | None = None
        self.finished: float | None = None
        self._attempt_bytes = 0
        self._window: collections.deque[tuple[float, int, int]] = collections.deque()  # (time, bytes, checked)

    @property
    def active(self) -> bool:
        return self.finished is None

    def new_attempt(self) -> None:
        """A FULL run starts (again): its counts start at 0, the figures shown go on from here."""
        self.bytes_before = self.bytes_done
        self._attempt_bytes = 0
        self.list_complete = False

    def observe(self, sample: ProgressSample, now: float) -> None:
        self._attempt_bytes = max(self._attempt_bytes, sample.bytes_done)
        self.bytes_done = max(self.bytes_done, self.bytes_before + self._attempt_bytes)
        self.checked = max(self.checked, sample.checked)
        self.listed = max(self.listed, sample.listed, self.checked)
        self.list_complete = sample.list_complete
        total = self.total
        if total:
            self.percent = max(self.percent or 0, min(99, 100 * self.checked // total))
        self._window.append((now, self.bytes_done, self.checked))
        while len(self._window) > 2 and self._window[1][0] <= now - RATE_WINDOW:
            self._window.popleft()

    @property
    def total(self) -> int | None:
        """The entries this full sync checks in all: rsync's once its list is complete, else the
        estimate (if any, and not below what rsync listed already); None when unknown."""
        if self.list_complete:
            return self.listed
        if self.expected_total:
            return max(self.expected_total, self.listed)
        return None

    def finish(self, now: float) -> None:
        """The full sync succeeded: 100 %, every entry checked."""
        self.finished = now
        self.percent = 100
        self.listed = max(self.listed, self.checked)
        self.checked = self.listed
        self.list_complete = True

    def _rates(self, now: float) -> tuple[float | None, float | None]:
        """Bytes and entries per second over the window (None before a second of it)."""
        if len(self._window) < 2 or self._window[-1][0] - self._window[0][0] < 1.0:
            return None, None
        (start, bytes_start, checked_start), (end, bytes_end, checked_end) = self._window[0], self._window[-1]
        seconds = end - start
        return (bytes_end - bytes_start) / seconds, (checked_end - checked_start) / seconds

    def eta(self, now: float) -> float | None:
        """Seconds left, once it means something (see the module's docstring)."""
        total = self.total
        if not self.active or total is None or now - self.started < ETA_AFTER or (self.percent or 0) < 1:
            return None
        _, entry_rate = self._rates(now)
        if not entry_rate:
            return None
        return max(0.0, (total - self.checked) / entry_rate)

    def snapshot(self, now: float) -> dict[str, Any]:
        """The status file's ``progress`` object (docs/CONTRACT.md)."""
        byte_rate, _ = self._rates(now)
        eta = self.eta(now)
        return {
            "reason": self.reason, "active": self.active, "percent": self.percent,
            "files_done": self.checked, "files_total": self.total if self.total is not None else self.listed,
            "files_total_final": self.list_complete or not self.active, "bytes": self.bytes_done,
            "rate": None if byte_rate is None or not self.active else round(byte_rate),
            "eta_s": None if eta is None else round(eta),
            "started": round(self.started + self.wall_offset, 1),
            "finished": None if self.finished is None else round(self.finished + self.wall_offset, 1),
        }


def describe_progress(progress: dict[str, Any]) -> str:
    """'initial sync: 31% · 1,234,567 of 4,012,000 files · 95 MiB/s · ETA 6h 12m' (a status
    file's progress object, for STATUS= and ``pirsyncd status``).

    >>> describe_progress({"reason": "initial", "active": True, "percent": 31, "files_done": 1234567,
    ...                    "files_total": 4012000, "files_total_final": True, "rate": 100000000, "eta_s": 22320})
    'initial sync: 31% · 1,234,567 of 4,012,000 files · 95 MiB/s · ETA 6h 12m'
    >>> describe_progress({"reason": "overflow", "active": True, "percent": None, "files_done": 10,
    ...                    "files_total": 50, "files_total_final": False, "rate": None, "eta_s": None})
    'full sync (overflow): 10 of 50+ files (rsync still lists)'
    """
    label = "initial sync" if progress.get("reason") == "initial" else f"full sync ({progress.get('reason')})"
    if not progress.get("active"):
        if progress.get("finished"):
            return f"{label}: done"
        return f"{label}: {progress.get('percent') or 0}%, to be retried"
    parts = [] if progress.get("percent") is None else [f"{progress['percent']}%"]
    total = progress.get("files_total") or 0
    if progress.get("percent") is None:
        parts.append(f"{progress.get('files_done', 0):,} of {total:,}+ files (rsync still lists)")
    else:
        parts.append(f"{progress.get('files_done', 0):,} of {total:,} files")
    if progress.get("rate") is not None:
        parts.append(f"{format_bytes(progress['rate'])}/s")
    if progress.get("eta_s") is not None:
        parts.append(f"ETA {format_duration(progress['eta_s'])}")
    return f"{label}: " + " · ".join(parts)


def format_bytes(count: float) -> str:
    """Binary units, no decimals past 10.

    >>> [format_bytes(value) for value in (512, 1536, 100000000, 5 * 2**40)]
    ['512 B', '1.5 KiB', '95 MiB', '5.0 TiB']
    """
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)} B"
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def format_duration(seconds: float) -> str:
    """'45s', '12m 5s', '6h 12m', '2d 3h'.

    >>> [format_duration(value) for value in (45, 725, 22320, 183600)]
    ['45s', '12m 5s', '6h 12m', '2d 3h']
    """
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
