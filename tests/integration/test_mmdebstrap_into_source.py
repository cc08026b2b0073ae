"""A real program that mounts inside the source (issue 22): ``mmdebstrap --mode=root`` builds a
Debian root in it, mounting proc, sysfs and /dev inside that root for minutes. The daemon must not
read them (else the unmounts at its end fail and it mirrors sysfs), and the mirror must converge
and settle. Needs root and Debian's mirror; runs once (pirsyncd choosing its deletion path)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.mounts import is_mount_point

pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mmdebstrap") is None,
                                 reason="needs root and mmdebstrap"),
              pytest.mark.auto_deletion_mode]


def test_mmdebstrap_into_the_source(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    root = source / "root"
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination))
    with daemon.start():
        try:
            build = subprocess.run(["mmdebstrap", "--mode=root", "--variant=minbase", "bookworm", str(root)],
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
        finally:
            for mounted in ("dev/pts", "dev", "sys", "proc"):  # only if mmdebstrap failed to
                if is_mount_point(root / mounted):
                    subprocess.run(["umount", "-l", str(root / mounted)], check=False)
        assert build.returncode == 0, build.stderr[-3000:]
        daemon.wait_synced(120)
        daemon.wait_mirrored(source, destination, 60)
        status = daemon.status()
        assert status.get("state") == "in-sync" and not status.get("failing"), daemon.describe()
        log = daemon.log()
        assert "retry in" not in log and "failed verification" not in log, log[-4000:]
        assert "a proc file system was mounted at root/proc" in log, log[-4000:]
