"""Directories replaced by symlinks while the daemon walks them (issue 22): every change made
afterwards inside the original directory reaches the destination, and the daemon settles."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from tests.support.daemon import Daemon


@pytest.mark.parametrize("seed", range(6))
def test_a_deploy_step_then_writes_in_the_original(tmp_path: Path, trees: tuple[Path, Path], seed: int) -> None:
    """lsyncd #290's deploy step: copy a directory into a release, remove the copy, put a symlink to
    the original in its place, then write inside the original a few microseconds later."""
    source, destination = trees
    for path in ("top/d1/x/y", "top/d1/z", "d2"):
        (source / path).mkdir(parents=True)
    (source / "top/d1/x/g").write_text("f\n")
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0")
    choose = random.Random(seed)
    with daemon.start():
        alias, target = (source / "d2" / "d1", "../top/d1") if seed % 2 else (source / "d1", "top/d1")
        shutil.copytree(source / "top" / "d1", alias, symlinks=True)
        shutil.rmtree(alias)
        alias.symlink_to(target)
        for index in range(choose.randint(4, 20)):
            parent = source / "top" / "d1" / choose.choice(("x", "z", "x/y", "."))
            if choose.random() < 0.4:
                (parent / f"n{index}").mkdir(exist_ok=True)
                (parent / f"n{index}" / "q").write_text("q\n")
            else:
                (parent / f"w{index}").write_text(f"w{index}\n")
        daemon.wait_synced(30)
        daemon.wait_mirrored(source, destination, 5)
        assert os.readlink(destination / alias.relative_to(source)) == target
        status = daemon.status()
        assert status.get("state") == "in-sync" and not status.get("failing"), status
