"""What operators steer and watch beyond the mirroring itself (issue 15), in one place the
Instance calls into: the pause switch, the hooks and the instance's own counters (inotify
overflows, the last change seen). Each replica keeps its own counters (``Replica.tally``).

    SIGUSR2 ─> refresh_pause ─> paused: the instance starts no job (events are still read)
    a job succeeded ─> hooks.synced ─> on_sync     a destination's alarm changed ─> on_failure
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pirsyncd.config.parse import Config
from pirsyncd.ops.hooks import HookCall, Hooks, WatchChild
from pirsyncd.ops.pause import PauseSwitch, default_pause_path
from pirsyncd.replica.policy import ReplicaState

log = logging.getLogger("pirsyncd")

_ALARMS = {ReplicaState.RETRYING: "failing", ReplicaState.HELD: "held", ReplicaState.FAILED: "failed"}


class Operations:
    """What an operator and the outside world get from the instance: the pause switch, the
    hooks, and the counters, fed by the instance and read into the status (:meth:`snapshot`)."""

    def __init__(self, config: Config, status_path: str | None, watch_child: WatchChild,
                 clock: Callable[[], float]) -> None:
        self.pause = PauseSwitch(config.pause_file or default_pause_path(config.instance, status_path))
        self.hooks = Hooks(config.on_sync, config.on_failure, config.hook_timeout, config.instance,
                           watch_child, clock)
        self.inotify_overflows = 0
        self.last_change: float | None = None  # epoch

    @property
    def paused(self) -> bool:
        return self.pause.paused

    def refresh_pause(self, pending: int, path: str | None = None) -> bool:
        """Look at the pause file (at start, on SIGUSR2, on a reload); True when that changed."""
        if not self.pause.refresh(path):
            return False
        if self.pause.paused:
            log.info("paused (%s exists): changes are kept, nothing is sent until pirsyncd resume; %d pending",
                     self.pause.path, pending, extra={"PIRSYNCD_PAUSED": 1})
        else:
            log.info("resumed: sending the %d pending changes", pending, extra={"PIRSYNCD_PAUSED": 0})
        return True

    def took_changes(self, changes: bool, overflow: bool) -> None:
        if changes:
            self.last_change = time.time()
        self.inotify_overflows += overflow

    def job_synced(self, destination: str, synced: Any) -> None:
        """A job succeeded (``synced``: a replica.results.SyncedJob): on_sync."""
        self.hooks.synced(HookCall.after_sync(destination, *synced))

    def observe(self, destination: str, state: ReplicaState, reason: str, last_error: dict[str, Any] | None,
                lost_reason: str, drift: int = 0) -> None:
        """After every event: on_failure when a destination's alarm (failing, held, failed,
        source-lost, drift found by its last periodic audit, or none) changed."""
        alarm = "source-lost" if lost_reason else _ALARMS.get(state, "") or ("drift" if drift else "")
        found = f"the last audit found {drift} difference{'' if drift == 1 else 's'} at the destination"
        error = lost_reason or reason or (last_error or {}).get("message", "") or (found if alarm == "drift" else "")
        self.hooks.observe(destination, alarm, error)

    def reconfigure(self, new: Config, status_path: str | None, pending: int) -> None:
        self.hooks.reconfigure(new.on_sync, new.on_failure, new.hook_timeout, new.instance)
        self.refresh_pause(pending, new.pause_file or default_pause_path(new.instance, status_path))

    def snapshot(self) -> dict[str, Any]:
        """The status file's keys of this part (docs/CONTRACT.md)."""
        return {"paused": self.pause.paused, "paused_since": self.pause.since, "pause_file": self.pause.path,
                "hooks": self.hooks.snapshot(), "inotify_overflows": self.inotify_overflows,
                "last_change": self.last_change}
