"""File systems mounted inside the source: which ones the mirror keeps out, and a descriptor
that wakes the loop whenever the mount table changes (a mount or an unmount anywhere).

Pseudo file systems (proc, sysfs, devtmpfs, ...) are never watched or sent: their files are
the kernel's, not data, and reading them keeps a user's tool from unmounting them. With
``one_file_system`` every other file system is kept out too, as ``rsync -x`` does. A kept-out
mount point itself is mirrored as an empty directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import select

MOUNTINFO = "/proc/self/mountinfo"
PSEUDO_FILE_SYSTEMS = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts", "devtmpfs",
    "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nfsd", "nsfs", "proc", "pstore", "rpc_pipefs",
    "securityfs", "selinuxfs", "sysfs", "tracefs",
})
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclasses.dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo: the device (as st_dev), where, and what type."""

    device: int
    mount_point: str
    fstype: str


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts listed, in mount order (a later one at the same place lies on top).

    >>> line = "36 35 0:22 / /srv/www/root/sys rw,nosuid shared:7 - sysfs sysfs rw"
    >>> parse_mountinfo(line)[0].fstype, parse_mountinfo(line)[0].mount_point
    ('sysfs', '/srv/www/root/sys')
    >>> parse_mountinfo(r"40 35 8:1 / /srv/with\\040space rw - ext4 /dev/sda1 rw")[0].mount_point
    '/srv/with space'
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            major, minor = fields[2].split(":")
            device = os.makedev(int(major), int(minor))
        except ValueError:
            continue  # not a line of that format: nothing to learn from it
        mount_point = _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), fields[4])
        mounts.append(Mount(device, os.fsdecode(mount_point.encode("latin-1")), fields[separator + 1]))
    return mounts


def mounts_below(root: str, mounts: list[Mount]) -> dict[str, Mount]:
    """The mounts strictly below ``root`` (a real path), by path relative to it; the last one
    mounted at a place wins.

    >>> mounts = [Mount(1, "/srv/www/a", "ext4"), Mount(2, "/srv/www2", "xfs"), Mount(3, "/srv/www/a", "proc")]
    >>> mounts_below("/srv/www", mounts)
    {'a': Mount(device=3, mount_point='/srv/www/a', fstype='proc')}
    """
    prefix = root.rstrip("/") + "/"
    return {mount.mount_point[len(prefix):]: mount for mount in mounts if mount.mount_point.startswith(prefix)}


def mount_of(real_path: str, table: list[Mount]) -> Mount | None:
    """The mount a real path (no symlinks) lies on by the mount table: the last one at the
    longest matching mount point.

    >>> mount_of("/srv/www/a", [Mount(1, "/", "ext4"), Mount(2, "/srv", "xfs")]).fstype
    'xfs'
    """
    best: Mount | None = None
    for mount in table:
        point = mount.mount_point
        inside = real_path == point or real_path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = mount
    return best


def kept_out_reason(fstype: str | None, one_file_system: bool) -> str | None:
    """Why a directory on a file system other than the source's stays out of the mirror, or
    None when it is mirrored (``fstype`` None: not a mount of its own, e.g. a btrfs subvolume).

    >>> kept_out_reason("sysfs", False), kept_out_reason("ext4", True), kept_out_reason("ext4", False)
    ('a sysfs pseudo file system', 'another file system (one_file_system)', None)
    """
    if fstype in PSEUDO_FILE_SYSTEMS:
        return f"a {fstype} pseudo file system"
    if one_file_system:
        return "another file system (one_file_system)"
    return None


class MountsBelow:
    """The file systems mounted below the source as the mount table last said, and which of
    them stay out of the mirror; the source's own device (``root_device``) never does."""

    def __init__(self, source: str, one_file_system: bool) -> None:
        self.source = source
        self.one_file_system = one_file_system
        self.root_device = 0
        self._below: dict[str, Mount] = {}  # by path relative to the source
        self._file_system_types: dict[int, str] = {}  # by device, of every mount

    def note(self, table: list[Mount]) -> list[str]:
        """Take the mount table as it is now; return the places below the source where a mount
        came, went or changed since the last look."""
        self._file_system_types = {mount.device: mount.fstype for mount in table}
        below = mounts_below(os.path.realpath(self.source), table)
        changed = sorted(path for path in below.keys() | self._below.keys() if below.get(path) != self._below.get(path))
        self._below = below
        return changed

    def at(self, relative: str) -> Mount | None:
        """The file system mounted at ``relative`` (a path below the source), if any."""
        return self._below.get(relative)

    def kept_out_reason(self, device: int) -> str | None:
        """Why a directory on ``device`` is not mirrored, or None (always for the source's own)."""
        if device == self.root_device:
            return None
        return kept_out_reason(self._file_system_types.get(device), self.one_file_system)

    def kept_out(self) -> list[str]:
        """The mount points below the source whose contents stay out of the mirror."""
        return [path for path, mount in self._below.items() if self.kept_out_reason(mount.device) is not None]


class MountTable:
    """/proc/self/mountinfo with a descriptor for the loop: it becomes readable when the mount
    table changes. The kernel reports a change as POLLPRI, which ``selectors`` cannot ask for,
    so an epoll of its own asks, and the loop waits on that epoll."""

    def __init__(self) -> None:
        self._file = open(MOUNTINFO, "rb", buffering=0)  # noqa: SIM115 (kept open: polled)
        self._poller = select.epoll()
        self._poller.register(self._file.fileno(), select.EPOLLPRI)

    def fileno(self) -> int:
        return self._poller.fileno()

    def read(self) -> list[Mount]:
        """The mounts now; also takes the change notice, so the descriptor is quiet again."""
        self._poller.poll(0)
        self._file.seek(0)
        chunks = []
        while chunk := self._file.read(65536):
            chunks.append(chunk)
        return parse_mountinfo(b"".join(chunks).decode("latin-1"))

    def close(self) -> None:
        self._poller.close()
        self._file.close()
