"""What reads an rsync run's output as the loop gets it, chunk by chunk, never waiting: a
full sync's progress lines (``--info=progress2``) feed its progress, the report of each entry
(``--out-format``, with on_sync) the entries rsync changed; what is left goes to the run log."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from pirsyncd.replica.itemize import ItemizedChanges, ItemizeReader
from pirsyncd.replica.progress import FullSyncProgress, ProgressParser
from pirsyncd.replica.rsync import RunMode

RSYNC_RUNS = frozenset(mode.value for mode in RunMode)  # the labels of a job's rsync runs

Sink = Callable[[bytes], bytes]  # takes a chunk of output, returns what it leaves for the log


def output_sink(label: str, progress: FullSyncProgress | None, changed: ItemizedChanges | None,
                limit: int) -> Sink | None:
    """The readers of one rsync run (``label``) chained, or None when nothing reads it: the
    progress reader for a full sync (with ``progress``), the entry report's reader with
    ``changed`` (on_sync set), at most ``limit`` entries."""
    sinks: list[Sink] = []
    if label == RunMode.FULL.value and progress is not None:
        sinks.append(progress_reader(progress))
    if changed is not None:
        sinks.append(ItemizeReader(limit, changed).feed)
    if not sinks:
        return None
    return functools.reduce(lambda first, then: lambda data: then(first(data)), sinks)


def progress_reader(progress: FullSyncProgress) -> Sink:
    """A full sync's output: its progress lines feed ``progress``, the rest is kept."""
    parser = ProgressParser()

    def read(data: bytes) -> bytes:
        kept, sample = parser.feed(data)
        if sample is not None:
            progress.observe(sample, time.monotonic())
        return kept

    return read
