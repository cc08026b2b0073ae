"""Checks that keep a mirror from being wiped or misused, run at start and before every
full sync: the source must exist, be a directory, and not be empty while the
destination is not (an unmounted file system looks exactly like that)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

from pirsyncd import exitcodes
from pirsyncd.config import Config
from pirsyncd.destination import DAEMON, LOCAL
from pirsyncd.rsync import build_rsync_command


class SourceProblem(Exception):
    """The source cannot be mirrored safely now. ``exit_status`` for the command line."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def _is_empty_directory(path: str) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _destination_has_entries(config: Config) -> bool:
    destination = config.destination
    if destination.kind == LOCAL:
        try:
            return not _is_empty_directory(destination.path)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: assume there is something to lose
    # Ask the remote side with a listing; any failure counts as "has entries".
    argv = build_rsync_command(config, "full")
    listing = [word for word in argv[:-2] if word not in ("--delete", "--force", "--stats")]
    listing += ["--list-only", "--no-recursive", "--dirs", argv[-1]]
    try:
        result = subprocess.run(listing, capture_output=True, timeout=config.io_timeout + 5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if result.returncode != 0:
        return result.returncode != 23  # 23: the destination path does not exist yet
    entries = [line for line in result.stdout.splitlines() if line.strip() and not line.endswith(b" .")]
    return bool(entries)


def check_source(config: Config) -> None:
    """Raise SourceProblem when syncing now could wipe or corrupt the mirror."""
    source = config.source
    try:
        status = os.stat(source)
    except FileNotFoundError:
        raise SourceProblem(f"the source {source} does not exist; create or mount it, or fix 'source'",
                            exitcodes.NO_SOURCE) from None
    except OSError as error:
        raise SourceProblem(f"the source {source} cannot be read: {error.strerror}",
                            exitcodes.NO_SOURCE) from None
    if not stat.S_ISDIR(status.st_mode):
        raise SourceProblem(f"the source {source} is not a directory; fix 'source'", exitcodes.NO_SOURCE)
    try:
        empty = _is_empty_directory(source)
    except OSError as error:
        raise SourceProblem(f"the source {source} cannot be listed: {error.strerror}",
                            exitcodes.NO_SOURCE) from None
    if empty and not config.allow_empty_source and _destination_has_entries(config):
        raise SourceProblem(
            f"the source {source} is empty but the destination is not; refusing to wipe the mirror "
            "(is the source file system mounted?). Set allow_empty_source = yes to mirror an empty source",
            exitcodes.REFUSED_WIPE)


def preflight(config: Config) -> list[tuple[int, str]]:
    """Problems that stop pirsyncd from starting, as (exit status, message)."""
    problems: list[tuple[int, str]] = []
    binary = config.rsync_binary
    if shutil.which(binary) is None:
        problems.append((exitcodes.CONFIG, f"rsync_binary: {binary!r} is not an executable program; "
                                           "install rsync (apt install rsync) or fix rsync_binary"))
    if config.password_file and config.destination.kind == DAEMON:
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
        check_source(config)
    except SourceProblem as problem:
        problems.append((problem.exit_status, str(problem)))
    return problems
