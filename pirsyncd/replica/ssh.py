"""The ssh connections shared by all runs: one ControlMaster per host, its socket in a
private directory, told to exit when the daemon stops (so no ssh outlives it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable

from pirsyncd.config.destination import DestinationKind
from pirsyncd.config.parse import Config
from pirsyncd.edges.runner import Child
from pirsyncd.replica import rsync


class SharedConnections:
    """One ssh connection per remote host, shared by the runs of every replica (ControlMaster
    in a private directory), opened at start and closed at exit."""

    def __init__(self) -> None:
        self.directory = ""
        self.control_path: str | None = None

    def open(self, configs: Iterable[Config]) -> None:
        """Make the private directory when any destination is reached over ssh."""
        if any(config.destination.kind == DestinationKind.SSH for config in configs):
            self.directory = tempfile.mkdtemp(prefix="pirsyncd-ssh-")
            self.control_path = os.path.join(self.directory, "%C")  # %C: one socket per host, port, user

    def close(self, configs: Iterable[Config]) -> None:
        if self.control_path is None:
            return
        for config in configs:
            if config.destination.kind == DestinationKind.SSH:
                Child(rsync.build_close_connection_command(config, self.control_path), b"", "ssh exit").wait(10.0)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.control_path = None
