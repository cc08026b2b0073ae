"""A tmpfs of its own for a run's source (issue 27): a fanotify filesystem mark placed on it
then sees that source's changes, and what a workload does beside the source on purpose, but not
the rest of ``/dev/shm`` (other runs, other programs). Every contender of a workload gets the same
layout, so the comparison stays fair; the destination stays under ``--root``.

Mounting needs root (the benchmark's fanotify runs need it anyway: CAP_SYS_ADMIN). The mount is
removed at the end, which also frees its files at once (faster than removing a million files).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

# Room for W3large (1.1 million entries) and the watch-limit tree, with margin; a tmpfs takes
# memory only for what is in it, so a high limit costs nothing.
INODES = 4_000_000
SIZE = "75%"


def mount_refusal(root: str) -> str | None:
    """Why a tmpfs cannot be mounted below ``root`` here, or None (a mount tried and removed)."""
    probe = os.path.join(root, f"pirsyncd-bench-mount-probe-{os.getpid()}")
    try:
        with own_tmpfs(probe):
            return None
    except (OSError, subprocess.CalledProcessError) as error:
        return f"mount -t tmpfs failed ({error}); run as root, or without the fanotify variants"


@contextlib.contextmanager
def own_tmpfs(path: str, inodes: int = INODES) -> Iterator[str]:
    """Create ``path``, mount a fresh tmpfs on it, yield it; unmount and remove it afterwards
    (every process using it must have ended by then: the daemons are stopped by PID first)."""
    os.mkdir(path)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},nr_inodes={inodes},mode=0755",
                        "pirsyncd-bench", path], check=True, capture_output=True)
    except BaseException:
        os.rmdir(path)
        raise
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            os.rmdir(path)
