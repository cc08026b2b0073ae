"""The source's identity: it must exist, be a directory, and be the directory that is
watched (checked before every run); an empty source is told apart, for the check that it is
not empty while the destination is not (an unmounted file system looks exactly like that;
see :mod:`pirsyncd.replica.preflight`)."""

from __future__ import annotations

import dataclasses
import os
import stat

from pirsyncd.config import exitcodes


class SourceProblem(Exception):
    """The source cannot be mirrored safely now. ``exit_status`` for the command line."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclasses.dataclass(frozen=True)
class SourceIdentity:
    """Which directory the source path led to when it was watched: its file system and
    inode, its file handle (:func:`file_handle`; "" where the file system has none), and the
    mount it was reached through. Two mounts of the same directory show the same tree, so the
    device, inode and handle decide; the mount id is for people. The handle tells apart what
    the device and inode cannot: a file system made anew at the same place (a new tmpfs may
    get the old one's device number, and its root the same inode number).

    >>> old = SourceIdentity(40, 1, 46, "1:0100000029a1f3")
    >>> old.same_directory(SourceIdentity(40, 1, 69, "1:0100000029a1f3"))  # another mount of it
    True
    >>> old.same_directory(SourceIdentity(40, 1, 46, "1:01000000c07e55"))  # a new tmpfs there
    False
    >>> old.same_directory(SourceIdentity(40, 1, 46, ""))  # no handle to compare
    True
    """

    device: int
    inode: int
    mount_id: int | None
    handle: str = ""

    def same_directory(self, other: SourceIdentity) -> bool:
        if (self.device, self.inode) != (other.device, other.inode):
            return False
        return not (self.handle and other.handle) or self.handle == other.handle


def file_handle(path: str, descriptor: int | None = None) -> str:
    """The kernel's file handle of ``path`` (name_to_handle_at(2)), or of the open
    ``descriptor`` when given, as text; "" where the file system has none. It names the
    object on its file system, the same through every mount and mount namespace of it (a
    unit's private namespace, each start, is one), and another for the directory of a file
    system made anew at the same place (a new tmpfs: the generation is random), where device
    numbers and mount ids are recycled."""
    from pirsyncd.source.fanotify import AT_EMPTY_PATH, name_to_handle_at  # ctypes: loaded when first asked

    try:
        if descriptor is None:
            handle_type, handle, _mount_id = name_to_handle_at(path)
        else:
            handle_type, handle, _mount_id = name_to_handle_at("", descriptor, AT_EMPTY_PATH)
    except OSError:
        return ""
    return f"{handle_type}:{handle.hex()}"


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
        handle = file_handle(path, descriptor)
    finally:
        os.close(descriptor)
    return SourceIdentity(status.st_dev, status.st_ino, mount_id, handle)


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
        was = "a file system made anew there" if (now.device, now.inode) == (watched.device, watched.inode) else (
            f"device {now.device}, inode {now.inode}, was {watched.device}, {watched.inode}")
        return (f"the source {source} now leads to another directory ({was}): unmounted, or something mounted "
                "or moved in its place")
    return None  # another mount of the same directory (a bind mount) shows the same tree


def is_empty_directory(path: str) -> bool:
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
        return is_empty_directory(source)
    except OSError as error:
        raise SourceProblem(f"the source {source} cannot be listed: {error.strerror}",
                            exitcodes.NO_SOURCE) from None


def wipe_refusal(source: str) -> SourceProblem:
    return SourceProblem(
        f"the source {source} is empty but the destination is not; refusing to wipe the mirror "
        "(is the source file system mounted?). Set allow_empty_source = yes to mirror an empty source",
        exitcodes.REFUSED_WIPE)
