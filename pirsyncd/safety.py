"""Checks that keep a mirror from being wiped or misused, run at start and before every
full sync: the source must exist, be a directory, and not be empty while the
destination is not (an unmounted file system looks exactly like that)."""

from __future__ import annotations

import dataclasses
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
