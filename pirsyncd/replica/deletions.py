"""How a replica sends deletions: with ``--delete-missing-args`` or by re-checking each
deleted path's parent directory (the fallback; Debian 12's rsync 3.2.7 needs it). Set by
``deletion_mode``, or, for ``auto``, learnt from a probe of the rsync binary: its version and a
tiny local transfer, two children started together before the watch walk. Their answer is
collected once both have ended (after the walk, or when the initial sync ends), so the first
batch does not wait for them (25-50 ms of rsync start and exit) and the path is logged at start.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable

from pirsyncd.edges.runner import Child, ChildResult, Command, start_child
from pirsyncd.replica import rsync

# deletion_mode -> whether batches use --delete-missing-args (None: probe the rsync)
USES_MISSING_ARGS: dict[str, bool | None] = {"auto": None, "missing-args": True, "parents": False}


def rsync_version(output: bytes) -> str:
    """The version from ``rsync --version``'s first line.

    >>> rsync_version(b"rsync  version 3.2.7  protocol version 32")
    '3.2.7'
    """
    words = output.decode(errors="replace").split()
    return words[2] if len(words) > 2 and words[:2] == ["rsync", "version"] else "unknown"


class DeletionProbe:
    """Does this rsync handle --delete-missing-args with --files-from? The two children run
    in a scratch directory; ``close()`` reaps whatever has not been and removes it."""

    def __init__(self, scratch: str, version: Child, transfer: Child) -> None:
        self.scratch, self.version, self.transfer = scratch, version, transfer

    @classmethod
    def start(cls, binary: str, start: Callable[[Command], Child] = start_child) -> DeletionProbe | None:
        """None when the scratch directory cannot be made: the batch then answers False
        (``start``: how a Command becomes a running Child, the runner's or a test's)."""
        try:
            scratch = tempfile.mkdtemp(prefix="pirsyncd-probe-")
        except OSError:
            return None
        try:
            source, target = os.path.join(scratch, "src"), os.path.join(scratch, "dst")
            os.mkdir(source)
            os.makedirs(os.path.join(target, "ghost-dir"))
            for path in (os.path.join(source, "present"), os.path.join(target, "ghost")):
                with open(path, "w"):
                    pass
            version = start(Command([binary, "--version"], b"", "rsync version"))
            transfer = start(Command(rsync.build_probe_command(binary, source, target), rsync.PROBE_INPUT, "probe"))
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            return None
        return cls(scratch, version, transfer)

    def answer(self, version: ChildResult, transfer: ChildResult) -> tuple[bool, str]:
        """(the transfer succeeded and deleted both missing entries, the rsync version)."""
        target = os.path.join(self.scratch, "dst")
        works = (transfer.status == 0 and not os.path.lexists(os.path.join(target, "ghost"))
                 and not os.path.lexists(os.path.join(target, "ghost-dir")))
        return works, rsync_version(version.stdout)

    def close(self) -> None:
        for child in (self.version, self.transfer):
            if not child.stdout.closed:  # not yet reaped
                child.stop("probe no longer needed")
                child.wait(2.0)
        shutil.rmtree(self.scratch, ignore_errors=True)


class DeletionPath:
    """A replica's answer (``uses_missing_args``: True, False, or None until probed), the
    rsync version the probe saw, and the probe started early, until a batch takes it."""

    def __init__(self, deletion_mode: str) -> None:
        self.uses_missing_args = USES_MISSING_ARGS[deletion_mode]
        self.rsync_version = ""
        self.probe: DeletionProbe | None = None

    @property
    def name(self) -> str | None:
        """For the status: ``missing-args``, ``parents``, or None (not probed yet)."""
        return None if self.uses_missing_args is None else ("missing-args" if self.uses_missing_args else "parents")

    def start_probe(self, binary: str, start: Callable[[Command], Child] = start_child) -> None:
        if self.uses_missing_args is None and self.probe is None:
            self.probe = DeletionProbe.start(binary, start)

    def collect(self) -> bool:
        """Take the probe's answer if both its children have ended (never waits); True if so."""
        probe = self.probe
        if probe is None or any(child.process.poll() is None for child in (probe.version, probe.transfer)):
            return False
        self.probe = None
        self.uses_missing_args, self.rsync_version = probe.answer(probe.version.finish(), probe.transfer.finish())
        probe.close()
        return True

    def take_probe(self) -> DeletionProbe | None:
        probe, self.probe = self.probe, None
        return probe

    def close_probe(self) -> None:
        probe = self.take_probe()
        if probe is not None:
            probe.close()

    def reconfigure(self, deletion_mode: str) -> None:
        self.close_probe()  # the binary may have changed: a batch probes it anew
        if deletion_mode != "auto":
            self.uses_missing_args = USES_MISSING_ARGS[deletion_mode]

    def describe(self, why: str, binary: str) -> tuple[int, str]:
        """The journal line (level, message) saying how deletions go, and why."""
        if self.uses_missing_args:
            return logging.INFO, f"deletions: rsync --delete-missing-args ({why})"
        if why == "probed":
            return logging.WARNING, (f"this rsync ({binary} {self.rsync_version}) mishandles --delete-missing-args "
                                     "with --files-from; deletions are sent by re-checking each deleted path's "
                                     "parent directory (its own entries)")
        return logging.INFO, f"deletions: re-checking each deleted path's parent directory ({why})"
