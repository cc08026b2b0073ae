"""Checks that keep a mirror from being wiped or misused: the source must exist, be a
directory, be the directory that is watched (checked before every run), and not be
empty while the destination is not (an unmounted file system looks exactly like that;
checked at start and before every full sync)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat

from pirsyncd import exitcodes
from pirsyncd.config import Config
from pirsyncd.destination import DestinationKind
from pirsyncd.rsync import build_listing_command, listing_shows_entries
from pirsyncd.runner import Child


class SourceProblem(Exception):
    """The source cannot be mirrored safely now. ``exit_status`` for the command line."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclasses.dataclass(frozen=True)
class SourceIdentity:
    """Which directory the source path led to when it was watched: its file system and
    inode, and the mount it was reached through. Two mounts of the same directory show
    the same tree, so the device and inode decide; the mount id is for people."""

    device: int
    inode: int
    mount_id: int | None

    def same_directory(self, other: SourceIdentity) -> bool:
        return (self.device, self.inode) == (other.device, other.inode)


def source_identity(path: str) -> SourceIdentity:
    """The identity of the directory ``path`` leads to now; OSError when it cannot be opened."""
    descriptor = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        status = os.fstat(descriptor)
        mount_id = None
        try:
            with open(f"/proc/self/fdinfo/{descriptor}", "rb") as stream:
                for line in stream:
                    if line.startswith(b"mnt_id:"):
                        mount_id = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    finally:
        os.close(descriptor)
    return SourceIdentity(status.st_dev, status.st_ino, mount_id)


def describe_identity_change(source: str, watched: SourceIdentity) -> str | None:
    """Why ``source`` no longer leads to the directory that is watched, or None if it does."""
    try:
        now = source_identity(source)
    except FileNotFoundError:
        return f"the source {source} no longer exists"
    except NotADirectoryError:
        return f"the source {source} is no longer a directory"
    except OSError as error:
        return f"the source {source} cannot be opened ({error.strerror})"
    if not now.same_directory(watched):
        return (f"the source {source} now leads to another directory (device {now.device}, inode "
                f"{now.inode}, was {watched.device}, {watched.inode}): unmounted, or something mounted "
                "or moved in its place")
    return None  # another mount of the same directory (a bind mount) shows the same tree


def _is_empty_directory(path: str) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def inspect_source(source: str) -> bool:
    """True when the source is an empty directory; SourceProblem when it cannot be mirrored."""
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
        return _is_empty_directory(source)
    except OSError as error:
        raise SourceProblem(f"the source {source} cannot be listed: {error.strerror}",
                            exitcodes.NO_SOURCE) from None


def wipe_refusal(source: str) -> SourceProblem:
    return SourceProblem(
        f"the source {source} is empty but the destination is not; refusing to wipe the mirror "
        "(is the source file system mounted?). Set allow_empty_source = yes to mirror an empty source",
        exitcodes.REFUSED_WIPE)


def local_destination_has_entries(path: str) -> bool:
    try:
        return not _is_empty_directory(path)
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
