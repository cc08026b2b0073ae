"""Mounts a test makes (needs root), and whether a path is a mount point; the ``mounts``
fixture (tests/integration/conftest.py) unmounts whatever a test left mounted."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.trees import wait_for


class Mounts:
    """Mounts a test makes; whatever is still mounted at the end is unmounted (lazily), and the
    loop devices it attached are detached."""

    def __init__(self) -> None:
        self.targets: list[Path] = []
        self.loop_devices: list[str] = []

    def ext4_device(self, image: Path, megabytes: int = 32) -> str:
        """A new ext4 file system in the file ``image``, attached to a loop device of its own
        (returned, e.g. /dev/loop3) that stays attached until the end of the test: mounted,
        unmounted and mounted again it keeps its device number, as a disk does."""
        with open(image, "wb") as stream:
            stream.truncate(megabytes * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                                text=True).stdout.strip()
        self.loop_devices.append(device)
        return device

    def mount(self, *arguments: str, target: Path) -> None:
        subprocess.run(["mount", *arguments, str(target)], check=True)
        self.targets.append(target)

    def make_read_only(self, target: Path) -> None:
        """Make the directory ``target`` read-only where it is: a bind mount of it onto itself,
        remounted read-only; :meth:`unmount` makes it writable again."""
        self.mount("--bind", str(target), target=target)
        self.mount("-o", "remount,ro,bind", target=target)

    def unmount(self, target: Path, lazy: bool = False, timeout: float = 30) -> None:
        """umount (``lazy``: -l). A mount a daemon's rsync is working in (a destination it retries)
        is busy while that run lasts: tried again until ``timeout``, then the error is raised."""

        def unmounted() -> bool:
            result = subprocess.run(["umount", *(["-l"] if lazy else []), str(target)],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0 and "busy" not in result.stderr:
                raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
            return result.returncode == 0

        wait_for(unmounted, timeout, lambda: f"{target} stayed busy for {timeout:g} s")

    def unmount_everything(self) -> None:
        for target in reversed(self.targets):
            while is_mount_point(target):
                if subprocess.run(["umount", "-l", str(target)], check=False).returncode != 0:
                    break
        for device in reversed(self.loop_devices):
            subprocess.run(["losetup", "--detach", device], check=False)


def is_mount_point(path: Path) -> bool:
    # os.path.ismount misses a bind mount within one file system; mountinfo does not.
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == str(path) for line in mountinfo)
