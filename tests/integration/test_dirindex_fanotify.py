"""The fanotify backend's directory index (pirsyncd.source.dirindex) on a real filesystem mark:
the source side reads the real events of a seeded churn (a writer thread, so the events, the
reads and the index's scans interleave as they come) and, whenever the churn pauses and the
queue is drained with no scan left, the index must be exactly the tree of directories on disk
(every directory at its place, with its inode). That is what the restart state writes. Needs
root (a tmpfs of its own, a filesystem mark).

    PIRSYNCD_CHURN_SEED=1234 .venv/bin/python -m pytest tests/integration/test_dirindex_fanotify.py
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pirsyncd.source.dirindex import DirectoryIndex
from pirsyncd.source.intake import SourceSide
from tests.support import backends
from tests.support.mounts import Mounts
from tests.support.trees import real_directories
from tests.support.workload import Workload, seed_from_environment

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a tmpfs, a filesystem mark)")


def index_entries(index: DirectoryIndex) -> dict[str, int]:
    tree = index.tree
    return {tree.path_of(node): node.ino for node in tree.by_wd.values()}


def disk_entries(root: Path) -> dict[str, int]:
    return {path: os.lstat(root / path).st_ino for path in real_directories(root)}


def settle(side: SourceSide) -> None:
    """Read until the queue is empty and the index has no scan left (nothing changes now)."""
    for _ in range(10_000):
        side.read(lambda path: False)
        if not side.drained:
            continue
        if side.index is not None and side.index.working:
            side.walk_step()
            continue
        return
    raise AssertionError("the index never settled")


def churn(workload: Workload, count: int, failure: list[BaseException]) -> None:
    """The writer thread: ``count`` operations; what goes wrong is handed to the test."""
    try:
        workload.run(count)
    except BaseException as error:
        failure.append(error)


@pytest.mark.auto_deletion_mode  # (no rsync here: once is enough)
@pytest.mark.parametrize("profile", ["mixed", "renames", "sneaky", "deploy", "copylink"])
def test_the_index_is_the_tree_whenever_the_churn_pauses(tmp_path: Path, mounts: Mounts, profile: str) -> None:
    shared = tmp_path / "fs"
    shared.mkdir()
    mounts.mount("-t", "tmpfs", "-o", "size=512m", "tmpfs", target=shared)
    refusal = backends.fanotify_refusal(shared)
    if refusal is not None:
        pytest.skip(f"fanotify filesystem marks are not possible here: {refusal}")
    source, outside = shared / "source", shared / "outside"
    source.mkdir()
    outside.mkdir()
    seed = seed_from_environment(27027)
    workload = Workload(source, seed, profile, outside)
    workload.run(40)  # a tree there before the start
    side = SourceSide(str(source), (), watch_backend=backends.FANOTIFY)
    side.watch(at_once=True)
    try:
        side.build_index()  # begun, walked in steps while the churn goes on
        for round_number in range(8):
            failure: list[BaseException] = []
            writer = threading.Thread(target=churn, args=(workload, 20 + 5 * round_number, failure))
            writer.start()
            while writer.is_alive():
                side.read(lambda path: False)
                side.walk_step()
            writer.join()
            assert not failure, f"{workload.report(10)}\n{repr(failure[0])[:1000]}"
            settle(side)
            index = side.index
            assert index is not None and index.unusable is None, (
                f"{workload.report()}\nthe index was given up: {index and index.unusable}")
            assert index.complete and side.watch_tree is index.tree
            found, expected = index_entries(index), disk_entries(source)
            wrong = sorted(path for path in found if expected.get(path) != found[path])
            missing = sorted(set(expected) - set(found))
            assert not wrong and not missing, (
                f"{workload.report()}\nround {round_number}: at a wrong place or not on disk: {wrong[:10]}; "
                f"missing: {missing[:10]}")
    finally:
        side.close()
