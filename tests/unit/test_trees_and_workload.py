"""The test kit itself: tree comparison catches every kind of difference, the
random workload is deterministic, hostile, and produces trees that rsync can
mirror exactly (so a churn failure points at pirsyncd, not at the kit)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.trees import (
    Entry,
    Listing,
    differences,
    list_tree,
    snapshot,
    subtree_extent,
    wait_for,
    wait_until_equal,
)
from tests.support.workload import (
    MAX_DEPTH,
    MAX_RELATIVE_PATH_BYTES,
    PROFILES,
    Workload,
    seed_from_environment,
)

RSYNC = shutil.which("rsync")
needs_rsync = pytest.mark.skipif(RSYNC is None, reason="rsync is not installed")


@pytest.fixture
def twin_trees(tmp_path: Path) -> tuple[Path, Path]:
    """Two equal trees: a/ with a file, a symlink, and a file with awkward names."""
    source, destination = tmp_path / "source", tmp_path / "destination"
    for root in (source, destination):
        (root / "a" / "deep").mkdir(parents=True)
        (root / "a" / "deep" / "file").write_bytes(b"same bytes")
        (root / "-e sh\nnewline").write_bytes(b"")
        (root / "link").symlink_to("a/deep/file")
        os.chmod(root, 0o755)
    return source, destination


def test_equal_trees_have_no_differences(twin_trees: tuple[Path, Path]) -> None:
    assert differences(*twin_trees) == []


def test_same_size_and_mtime_but_different_content_is_caught(twin_trees: tuple[Path, Path]) -> None:
    source, destination = twin_trees
    (destination / "a" / "deep" / "file").write_bytes(b"SAME BYTES")
    source_status = os.stat(source / "a" / "deep" / "file")
    os.utime(destination / "a" / "deep" / "file", ns=(source_status.st_atime_ns, source_status.st_mtime_ns))
    assert differences(source, destination) == ["content differs: a/deep/file (same size 10)"]


def test_size_difference_is_caught(twin_trees: tuple[Path, Path]) -> None:
    source, destination = twin_trees
    (destination / "-e sh\nnewline").write_bytes(b"x")
    assert differences(source, destination) == ["content differs: '-e sh\\nnewline' (size 0 != 1)"]


def test_mode_differences_are_caught_including_the_root(twin_trees: tuple[Path, Path]) -> None:
    source, destination = twin_trees
    os.chmod(source / "a" / "deep" / "file", 0o644)
    os.chmod(destination / "a" / "deep" / "file", 0o600)
    os.chmod(destination, 0o700)
    assert differences(source, destination) == [
        "mode differs: . 0755 != 0700",
        "mode differs: a/deep/file 0644 != 0600",
    ]


def test_symlink_target_difference_is_caught(twin_trees: tuple[Path, Path]) -> None:
    source, destination = twin_trees
    (destination / "link").unlink()
    (destination / "link").symlink_to("a/deep")
    assert differences(source, destination) == ["symlink target differs: link 'a/deep/file' != 'a/deep'"]


def test_type_swap_is_one_line_not_one_per_descendant(twin_trees: tuple[Path, Path]) -> None:
    source, destination = twin_trees
    shutil.rmtree(destination / "a")
    (destination / "a").write_bytes(b"")
    (destination / "link").unlink()
    (destination / "link").write_bytes(b"a/deep/file")
    assert differences(source, destination) == [
        "type differs: a dir != file",
        "type differs: link symlink != file",
    ]


def test_missing_and_extra_entries_are_caught(twin_trees: tuple[Path, Path]) -> None:
    source, destination = twin_trees
    shutil.rmtree(destination / "a")
    (destination / "stale" / "child").mkdir(parents=True)
    assert differences(source, destination) == ["missing at destination: a", "extra at destination: stale"]


def test_missing_destination_root_is_a_difference(tmp_path: Path) -> None:
    assert differences(tmp_path, tmp_path / "absent") == ["missing at destination: ."]


def test_ignore_patterns_hide_subtrees_on_both_sides(twin_trees: tuple[Path, Path]) -> None:
    source, destination = twin_trees
    (destination / "a" / "deep" / "file").write_bytes(b"changed")
    (destination / "a" / "extra").write_bytes(b"")
    (destination / ".~tmp~").mkdir()
    assert differences(source, destination, ignore=["a", ".~tmp~"]) == []
    assert differences(source, destination, ignore=["a/deep", ".~tmp~"]) == ["extra at destination: a/extra"]


def test_snapshot_records_hostile_names_and_never_follows_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    root = tmp_path / "root"
    root.mkdir()
    long_name = "é" * 127 + "x"
    undecodable = os.fsdecode(b"latin1-\xe9")
    for name in ("--delete", "new\nline", long_name, undecodable):
        (root / name).write_bytes(name.encode("utf-8", "surrogateescape"))
    (root / "escape").symlink_to(outside)
    os.chmod(root / "--delete", 0o640)

    entries = snapshot(root)

    assert len(os.fsencode(long_name)) == 255
    assert set(entries) == {"--delete", "new\nline", long_name, undecodable, "escape"}
    assert entries["escape"] == Entry("symlink", target=str(outside))
    assert entries["--delete"].mode == 0o640
    assert entries[undecodable].size == len(b"latin1-\xe9")


def test_wait_until_equal_reports_differences_on_timeout(twin_trees: tuple[Path, Path]) -> None:
    source, destination = twin_trees
    for index in range(25):
        (source / f"new{index:02d}").write_bytes(b"")
    with pytest.raises(AssertionError) as raised:
        wait_until_equal(source, destination, timeout=0.2)
    message = str(raised.value)
    assert "missing at destination: new00" in message
    assert "missing at destination: new19" in message
    assert "missing at destination: new20" not in message
    assert "... and 5 more" in message


@needs_rsync
def test_wait_until_equal_returns_once_a_real_copy_finishes(twin_trees: tuple[Path, Path]) -> None:
    source, destination = twin_trees
    (source / "big").write_bytes(os.urandom(8 << 20))
    assert RSYNC is not None
    copier = subprocess.Popen([RSYNC, "-aI", "--delete", f"{source}/", f"{destination}/"])
    try:
        wait_until_equal(source, destination, timeout=30)
        # rsync may still be tidying up (directory times) after the last file lands.
        assert copier.wait(timeout=30) == 0
    finally:
        if copier.poll() is None:
            copier.kill()
            copier.wait()


def test_wait_for_returns_the_truthy_value_or_raises_with_the_message() -> None:
    calls: list[int] = []

    def third_call_returns_its_number() -> int:
        calls.append(len(calls) + 1)
        return calls[-1] if len(calls) == 3 else 0

    assert wait_for(third_call_returns_its_number, timeout=5, message="never") == 3
    with pytest.raises(AssertionError, match="still false"):
        wait_for(lambda: False, timeout=0.1, message=lambda: "still false")


def _fresh_run(base: Path, tree_name: str, seed: int, profile: str, operations: int) -> Workload:
    """Run a workload on an empty tree; ``outside`` is always base/outside, emptied first,
    so absolute symlink targets and moved-in entries match between runs."""
    outside = base / "outside"
    shutil.rmtree(outside, ignore_errors=True)
    outside.mkdir()
    root = base / tree_name
    root.mkdir()
    workload = Workload(root, seed=seed, profile=profile, outside=outside)
    workload.run(operations)
    return workload


@pytest.mark.parametrize("profile", PROFILES)
def test_same_seed_and_profile_give_identical_trees(tmp_path: Path, profile: str) -> None:
    seed = seed_from_environment(20240611)
    first = _fresh_run(tmp_path, "first", seed, profile, 200)
    second = _fresh_run(tmp_path, "second", seed, profile, 200)
    assert first.log == second.log, first.describe()
    assert snapshot(tmp_path / "first") == snapshot(tmp_path / "second"), first.describe()
    other = _fresh_run(tmp_path, "other", seed + 1, profile, 200)
    assert snapshot(tmp_path / "other") != snapshot(tmp_path / "first")
    assert other.describe() == f"replay: PIRSYNCD_CHURN_SEED={seed + 1} profile={profile}"


@needs_rsync
@pytest.mark.parametrize("profile", PROFILES)
def test_rsync_mirrors_every_profile_and_the_comparison_agrees(tmp_path: Path, profile: str) -> None:
    assert RSYNC is not None
    source, destination, outside = tmp_path / "source", tmp_path / "destination", tmp_path / "outside"
    for directory in (source, destination, outside):
        directory.mkdir()
    workload = Workload(source, seed=seed_from_environment(7), profile=profile, outside=outside)
    for _ in range(2):  # the second round mirrors onto a stale copy, as a daemon does
        workload.run(300)
        assert differences(source, destination), workload.report()
        subprocess.run([RSYNC, "-aI", "--delete", f"{source}/", f"{destination}/"], check=True)
        assert differences(source, destination) == [], workload.report()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["destination", "outside", "source"]
    for relative_path in snapshot(source):
        assert len(os.fsencode(relative_path)) <= MAX_RELATIVE_PATH_BYTES
        assert relative_path.count("/") < MAX_DEPTH


def test_hostile_profile_really_produces_hostile_names(tmp_path: Path) -> None:
    workload = _fresh_run(tmp_path, "tree", seed_from_environment(99), "hostile", 400)
    names = [relative_path.rsplit("/", 1)[-1] for relative_path in snapshot(tmp_path / "tree")]
    assert any("\n" in name for name in names), workload.report()
    assert any(name.startswith("-") for name in names), workload.report()
    assert any(len(os.fsencode(name)) == 255 for name in names), workload.report()
    assert any(not name.isascii() for name in names), workload.report()


def test_unknown_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown workload profile"):
        Workload(tmp_path, seed=1, profile="gentle", outside=tmp_path)


def _hard_linked_files(root: Path) -> list[str]:
    return [path for path in list_tree(root).files if os.lstat(root / path).st_nlink > 1]


@pytest.mark.parametrize("hard_links", [True, False])
def test_hard_links_can_be_left_out(tmp_path: Path, hard_links: bool) -> None:
    outside, root = tmp_path / "outside", tmp_path / "tree"
    outside.mkdir()
    root.mkdir()
    seed = seed_from_environment(5)
    workload = Workload(root, seed=seed, profile="mixed", outside=outside, hard_links=hard_links)
    seen_hard_links = False
    for _ in range(20):  # links come and go, so look after every few operations
        workload.run(20)
        seen_hard_links = seen_hard_links or bool(_hard_linked_files(root))
    assert seen_hard_links == hard_links, workload.report()


def test_list_tree_and_subtree_extent_describe_the_tree_without_following_links(tmp_path: Path) -> None:
    (tmp_path / "d" / "x").mkdir(parents=True)
    (tmp_path / "d" / "x" / "yz").write_bytes(b"")
    (tmp_path / "link-to-d").symlink_to("d")
    listing = list_tree(tmp_path)
    assert listing == Listing(files=["d/x/yz"], directories=["", "d", "d/x"], symlinks=["link-to-d"])
    assert listing.entries == ["d", "d/x", "d/x/yz", "link-to-d"]
    assert subtree_extent(tmp_path / "d") == (5, 2)
    assert subtree_extent(tmp_path / "link-to-d") == (0, 0)
    assert subtree_extent(tmp_path / "d" / "x" / "yz") == (0, 0)
