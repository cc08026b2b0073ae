"""``pirsyncd status`` with no name: every instance at a glance, one row per instance and
destination, from the status files of the running ones and the config files of the others.

    INSTANCE  DESTINATION  STATE         LAG   PENDING  LAST SUCCESS  PROGRESS             LAST ERROR
    www       web1         in-sync       -           0  4 s ago       -                    -
    www       web2         retrying      35 s       12  2 min ago     -                    connection refused
    big       big          initial-sync  2 h         1  never         31% · 1,234,567 ...  -
    backup    -            stopped       -           -  -             -                    not running: systemctl ...

The exit status makes it a monitoring check: 69 when a configured instance is not running, else 1
when a destination is retrying, held or failed or a source is lost, else 0.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from pirsyncd.config import exitcodes
from pirsyncd.config.parse import ConfigError, parse
from pirsyncd.ops.status import read_status, running_status
from pirsyncd.replica.progress import describe_progress

# Shipped in the config directory as a template to copy: not an instance.
NOT_INSTANCES = ("example",)
# A destination in one of these states needs a person (or at least is not mirroring).
TROUBLE_STATES = ("retrying", "held", "failed", "source-lost")
# The instance's own state, when it is one of these, is every destination's.
INSTANCE_STATES = ("starting", "paused", "source-lost", "stopping")


@dataclasses.dataclass(frozen=True)
class Row:
    """One instance and destination, as ``pirsyncd status`` shows it (``--json``: as a dict)."""

    instance: str
    destination: str  # its name; "-" when unknown (an instance whose config cannot be read)
    state: str  # the status file's, or "stopped" (configured, not running)
    running: bool
    configured: bool
    lag_s: float | None  # age of the oldest change not yet sent; None when nothing waits (or unknown)
    pending: int | None
    last_success: float | None  # epoch
    last_error: str | None
    status_file: str | None
    progress: dict[str, Any] | None = None  # the full sync running (the status file's progress object)

    @property
    def stopped_though_configured(self) -> bool:
        return self.configured and not self.running

    @property
    def in_trouble(self) -> bool:
        return self.running and self.state in TROUBLE_STATES


def instance_names(status_dir: str, config_dir: str) -> tuple[list[str], list[str]]:
    """The instances with a status file in ``status_dir`` (NAME.json) and those with a config file in
    ``config_dir`` (NAME.conf, but the shipped example.conf); a directory that is missing has none."""

    def names(directory: str, suffix: str) -> list[str]:
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            return []
        found = (entry[:-len(suffix)] for entry in entries if entry.endswith(suffix) and not entry.startswith("."))
        return sorted(name for name in found if name not in NOT_INSTANCES)

    return names(status_dir, ".json"), names(config_dir, ".conf")


def collect_rows(status_dir: str, config_dir: str, now: float | None = None) -> list[Row]:
    """Every row: each running instance's destinations from its status file, each configured one
    that is not running from its config file, sorted by instance."""
    now = time.time() if now is None else now
    with_status, configured = instance_names(status_dir, config_dir)
    rows: list[Row] = []
    for name in sorted({*with_status, *configured}):
        status_file = os.path.join(status_dir, f"{name}.json")
        status = running_status(status_file)
        if status is not None:
            rows += _running_rows(name, status, status_file, name in configured, now)
        elif name in configured:
            rows += _stopped_rows(name, os.path.join(config_dir, f"{name}.conf"), read_status(status_file))
        # A status file left by an instance no longer configured (nor running) is history: not shown.
    return rows


def _running_rows(name: str, status: dict[str, Any], status_file: str, configured: bool, now: float) -> list[Row]:
    views = [view for view in status.get("destinations") or () if isinstance(view, dict)] or [status]
    rows = []
    for view in views:
        oldest = view.get("oldest_unsent")
        error = view.get("last_error")
        state = status.get("state") if status.get("state") in INSTANCE_STATES else view.get("state")
        rows.append(Row(
            instance=name, destination=str(view.get("name") or "-"), state=str(state), running=True,
            configured=configured,
            lag_s=round(max(0.0, now - oldest), 1) if isinstance(oldest, (int, float)) else None,
            pending=view.get("pending") if isinstance(view.get("pending"), int) else None,
            last_success=view.get("last_success") if isinstance(view.get("last_success"), (int, float)) else None,
            last_error=str(error.get("message")) if isinstance(error, dict) and error.get("message") else None,
            status_file=status_file,
            progress=view["progress"] if isinstance(view.get("progress"), dict) and view["progress"].get("active")
            else None))
    return rows


def _stopped_rows(name: str, config_path: str, left: dict[str, Any] | None) -> list[Row]:
    """One row per destination the config names (one "-" row when it cannot be read), stopped.
    What its last run left in its status file gives the last success."""
    try:
        with open(config_path, encoding="utf-8") as stream:
            config = parse(stream.read(), config_path)
        destinations = [each.destination_name or "-" for each in config.per_destination()]
        problem = f"not running: systemctl start pirsyncd@{name}"
    except ConfigError as error:
        destinations, problem = ["-"], f"not running, and its configuration is not valid: {error.problems[0]}"
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        destinations, problem = ["-"], f"not running, and {config_path} cannot be read: {reason}"
    views = {str(view.get("name")): view for view in (left or {}).get("destinations") or () if isinstance(view, dict)}
    return [Row(instance=name, destination=destination, state="stopped", running=False, configured=True, lag_s=None,
                pending=None, last_success=_number(views.get(destination, {}).get("last_success")),
                last_error=problem, status_file=None) for destination in destinations]


def _number(value: object) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def overview_exit_status(rows: list[Row]) -> int:
    """69 when a configured instance is not running, else 1 when a destination is in trouble, else 0."""
    if any(row.stopped_though_configured for row in rows):
        return exitcodes.UNAVAILABLE
    if any(row.in_trouble for row in rows):
        return exitcodes.UNHEALTHY
    return exitcodes.OK


def format_age(seconds: float | None) -> str:
    """'-', '4 s', '3 min', '2 h', '5 d' (rounded down).

    >>> [format_age(value) for value in (None, 4.2, 200, 7300, 500000)]
    ['-', '4 s', '3 min', '2 h', '5 d']
    """
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def format_rows(rows: list[Row], now: float | None = None) -> str:
    """The table for a person: aligned columns, a header, the last error cut to one short line."""
    now = time.time() if now is None else now
    if not rows:
        return "no pirsyncd instance is configured or running"
    table = [("INSTANCE", "DESTINATION", "STATE", "LAG", "PENDING", "LAST SUCCESS", "PROGRESS", "LAST ERROR")]
    for row in rows:
        success = "-" if not row.running and row.last_success is None else (
            "never" if row.last_success is None else f"{format_age(now - row.last_success)} ago")
        error = (row.last_error or "-").splitlines()[0] if row.last_error else "-"
        table.append((row.instance, row.destination, row.state, format_age(row.lag_s),
                      "-" if row.pending is None else f"{row.pending:,}", success,
                      "-" if row.progress is None else describe_progress(row.progress).split(": ", 1)[1],
                      error if len(error) <= 80 else error[:79] + "…"))
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]) - 1)]
    return "\n".join("  ".join([*(cell.rjust(width) if column == 4 else cell.ljust(width)
                                  for column, (cell, width) in enumerate(zip(line[:-1], widths, strict=True))),
                                 line[-1]]).rstrip()
                     for line in table)


def rows_as_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(row) for row in rows]
