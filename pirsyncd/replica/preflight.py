"""Checks before syncing that could wipe or corrupt the mirror, and the problems that stop
pirsyncd from starting: the rsync binary, the password and identity files, and a source that
is empty while the destination is not (blocking: for the start, --check and a reload)."""

from __future__ import annotations

import os
import shutil
import stat

from pirsyncd.config import exitcodes
from pirsyncd.config.destination import DestinationKind
from pirsyncd.config.parse import Config
from pirsyncd.edges.runner import Child
from pirsyncd.replica.rsync import build_listing_command, listing_shows_entries
from pirsyncd.source.identity import SourceProblem, inspect_source, is_empty_directory, wipe_refusal


def local_destination_has_entries(path: str) -> bool:
    try:
        return not is_empty_directory(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: assume there is something to lose


def destination_has_entries(config: Config) -> bool:
    """Whether the destination holds anything, asking a remote one with a listing (blocking:
    for the start and --check; the loop runs the same listing as a step of a full sync)."""
    if config.destination.kind == DestinationKind.LOCAL:
        return local_destination_has_entries(config.destination.path)
    try:
        result = Child(build_listing_command(config), b"", "listing").wait(config.io_timeout + 5)
    except OSError:
        return True
    return listing_shows_entries(result.status, result.stdout)


def check_source(config: Config) -> None:
    """Raise SourceProblem when syncing now could wipe or corrupt the mirror (blocking)."""
    empty = inspect_source(config.source)
    if empty and not config.allow_empty_source and destination_has_entries(config):
        raise wipe_refusal(config.source)


def preflight(config: Config, look_at_destination: bool = True) -> list[tuple[int, str]]:
    """Problems that stop pirsyncd from starting, as (exit status, message). Without
    ``look_at_destination`` (a reload, in the loop) a remote destination is not listed:
    the next full sync does that as one of its steps."""
    problems: list[tuple[int, str]] = []
    binary = config.rsync_binary
    if shutil.which(binary) is None:
        problems.append((exitcodes.CONFIG, f"rsync_binary: {binary!r} is not an executable program; "
                                           "install rsync (apt install rsync) or fix rsync_binary"))
    if config.password_file and config.destination.kind == DestinationKind.DAEMON:
        try:
            mode = os.stat(config.password_file).st_mode
        except OSError as error:
            problems.append((exitcodes.CONFIG, f"password_file: {config.password_file}: {error.strerror}; "
                                               "create it with the rsync daemon password"))
        else:
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                problems.append((exitcodes.CONFIG, f"password_file: {config.password_file} is readable by "
                                                   f"others; rsync refuses it: chmod 600 {config.password_file}"))
    if config.ssh_identity_file and not os.path.isfile(config.ssh_identity_file):
        problems.append((exitcodes.CONFIG, f"ssh_identity_file: {config.ssh_identity_file} does not exist"))
    try:
        if look_at_destination or config.destination.kind == DestinationKind.LOCAL:
            check_source(config)
        else:
            inspect_source(config.source)
    except SourceProblem as problem:
        problems.append((problem.exit_status, str(problem)))
    return problems
