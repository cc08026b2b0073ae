"""The fanotify binding, the handle resolver and the capability probe against the real kernel:
filesystem marks on file systems this test mounts (tmpfs, an ext4 loop image, overlayfs, btrfs
and FUSE where their tools are installed), and with capabilities dropped (setpriv).

Every test needs root; those that read events skip where this machine cannot place a
filesystem mark, with the probe's reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pirsyncd.source.events import Change, ChangeKind
from pirsyncd.source.fanotify import Fanotify, name_to_handle_at
from pirsyncd.source.fanotify_changes import FanotifyTranslator
from pirsyncd.source.fanotify_events import (
    FAN_ATTRIB,
    FAN_CLOSE_WRITE,
    FAN_DELETE,
    UNREACHABLE,
    FanotifyEvent,
    FileHandle,
    Gone,
    parse_events,
)
from pirsyncd.source.fanotify_paths import HandleResolver, KernelLookup, is_dir_on_disk
from pirsyncd.source.fanotify_probe import filesystem_marks_refusal
from tests.support.mounts import Mounts
from tests.support.trees import wait_for

pytestmark = [pytest.mark.auto_deletion_mode,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, CAP_SYS_ADMIN)")]
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def tmpfs(tmp_path: Path, mounts: Mounts) -> Path:
    """A fresh tmpfs: a file system whose events are this test's alone."""
    target = tmp_path / "tmpfs"
    target.mkdir()
    mounts.mount("-t", "tmpfs", "tmpfs", target=target)
    return target


@pytest.fixture
def marked(tmpfs: Path) -> Iterator[tuple[Fanotify, Path]]:
    refusal = filesystem_marks_refusal(str(tmpfs))
    if refusal:
        pytest.skip(f"fanotify filesystem marks are not possible here: {refusal}")
    with Fanotify() as group:
        group.mark(str(tmpfs))
        yield group, tmpfs


def handle_of(path: Path) -> FileHandle:
    """The handle a FID record of ``path`` carries (the fsid is not part of what resolves)."""
    handle_type, handle, _ = name_to_handle_at(str(path))
    return FileHandle(b"", handle_type, handle)


def read_until(group: Fanotify, done: Callable[[FanotifyEvent], object]) -> list[FanotifyEvent]:
    """Read events until one satisfies ``done`` (a predicate), with a deadline."""
    events: list[FanotifyEvent] = []

    def arrived() -> bool:
        events.extend(parse_events(group.read()))
        return any(done(each) for each in events)

    wait_for(arrived, 10, lambda: f"the awaited event did not arrive; read: {events}")
    return events


def test_events_in_brand_new_nested_directories_all_arrive(marked: tuple[Fanotify, Path]) -> None:
    """mkdir -p a/b/c && echo > a/b/c/f: one mark sees all of it, with no watch to race."""
    group, root = marked
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "f").write_text("x")
    events = read_until(group, lambda each: each.mask & FAN_CLOSE_WRITE and each.entry and each.entry.name == "f")
    lookup = KernelLookup(str(root))
    try:
        resolver = HandleResolver(lookup)
        paths = {os.path.join(str(resolver.resolve(each.entry.directory)), each.entry.name)
                 for each in events if each.entry}
    finally:
        lookup.close()
    assert {f"{root}/a", f"{root}/a/b", f"{root}/a/b/c", f"{root}/a/b/c/f"} <= paths


def test_a_directory_handle_becomes_its_path_wherever_it_moved(tmpfs: Path) -> None:
    (tmpfs / "a" / "b").mkdir(parents=True)
    directory = handle_of(tmpfs / "a" / "b")
    lookup = KernelLookup(str(tmpfs))
    resolver = HandleResolver(lookup)
    try:
        assert resolver.resolve(directory) == f"{tmpfs}/a/b"
        os.rename(tmpfs / "a", tmpfs / "moved")
        assert resolver.resolve(directory) == f"{tmpfs}/a/b", "answered from the cache until told"
        resolver.forget_below(f"{tmpfs}/a")
        assert resolver.resolve(directory) == f"{tmpfs}/moved/b"
        assert resolver.lookups == 2
    finally:
        lookup.close()


def test_a_directory_a_bind_mounted_source_does_not_reach_is_unreachable_until_moved_in(
        tmpfs: Path, tmp_path: Path, mounts: Mounts) -> None:
    """The source a bind mount of ``tree``: the kernel reads a directory beside ``tree`` back
    as "/" through the source's mount; it is Gone "unreachable", not the root (whose name
    joined to an entry's would make it a path above the source), and it is asked again once
    moved into ``tree``."""
    (tmpfs / "tree").mkdir()
    (tmpfs / "staging" / "release").mkdir(parents=True)
    source = tmp_path / "source"
    source.mkdir()
    mounts.mount("--bind", str(tmpfs / "tree"), target=source)
    release, staging = handle_of(tmpfs / "staging" / "release"), handle_of(tmpfs / "staging")
    lookup = KernelLookup(str(source))
    resolver = HandleResolver(lookup)
    try:
        assert resolver.resolve(staging) == Gone(UNREACHABLE)
        assert resolver.resolve(release) == Gone(UNREACHABLE)
        assert resolver.resolve(handle_of(source)) == str(source)
        os.rename(tmpfs / "staging" / "release", tmpfs / "tree" / "release")
        assert resolver.resolve(release) == f"{source}/release"
    finally:
        lookup.close()


def test_a_deleted_directory_s_handle_is_reported_gone(tmpfs: Path) -> None:
    (tmpfs / "held").mkdir()
    (tmpfs / "plain").mkdir()
    (tmpfs / "named (deleted)").mkdir()
    held, plain, named = handle_of(tmpfs / "held"), handle_of(tmpfs / "plain"), handle_of(tmpfs / "named (deleted)")
    holder = os.open(tmpfs / "held", os.O_RDONLY)
    lookup = KernelLookup(str(tmpfs))
    try:
        os.rmdir(tmpfs / "held")
        os.rmdir(tmpfs / "plain")
        assert lookup(held) == Gone("deleted", f"{tmpfs}/held")
        os.close(holder)
        holder = -1
        assert lookup(plain) == Gone("stale")
        assert lookup(named) == f"{tmpfs}/named (deleted)", "a live directory with that name"
    finally:
        if holder >= 0:
            os.close(holder)
        lookup.close()


def test_the_probe_allows_tmpfs_and_a_tree_s_own_file_system(tmpfs: Path, tmp_path: Path) -> None:
    assert filesystem_marks_refusal(str(tmpfs)) is None
    assert filesystem_marks_refusal(str(tmp_path)) is None


def test_the_probe_allows_ext4(tmp_path: Path, mounts: Mounts) -> None:
    if not shutil.which("mkfs.ext4") or not os.path.exists("/dev/loop-control"):
        pytest.skip("needs mkfs.ext4 and loop devices")
    image, target = tmp_path / "ext4.img", tmp_path / "ext4"
    target.mkdir()
    with open(image, "wb") as file:
        file.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mounts.mount("-o", "loop", str(image), target=target)
    (target / "src").mkdir()
    assert filesystem_marks_refusal(str(target / "src")) is None


def test_the_probe_refuses_overlayfs_with_the_reason(tmp_path: Path, mounts: Mounts) -> None:
    for name in ("lower", "upper", "work", "merged"):
        (tmp_path / name).mkdir()
    options = f"lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,workdir={tmp_path}/work"
    mounts.mount("-t", "overlay", "overlay", "-o", options, target=tmp_path / "merged")
    refusal = filesystem_marks_refusal(str(tmp_path / "merged"))
    assert refusal == (f"{tmp_path}/merged is on overlay (mounted at {tmp_path}/merged), which cannot report file"
                       " handles to fanotify (overlayfs does so only with index=on,nfs_export=on)")


def test_the_probe_refuses_a_btrfs_subvolume(tmp_path: Path, mounts: Mounts) -> None:
    if not shutil.which("mkfs.btrfs") or not shutil.which("btrfs"):
        pytest.skip("needs btrfs-progs (mkfs.btrfs, btrfs)")
    image, target = tmp_path / "btrfs.img", tmp_path / "btrfs"
    target.mkdir()
    with open(image, "wb") as file:
        file.truncate(160 * 1024 * 1024)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(image)], check=True, capture_output=True)
    mounts.mount("-o", "loop", str(image), target=target)
    subprocess.run(["btrfs", "-q", "subvolume", "create", str(target / "sub")], check=True)
    (target / "sub" / "src").mkdir()
    assert filesystem_marks_refusal(str(target)) is None, "the top subvolume can be marked"
    refusal = filesystem_marks_refusal(str(target / "sub" / "src"))
    assert refusal is not None and "inside a btrfs subvolume" in refusal and f"mounted at {target}" in refusal


def test_the_probe_refuses_fuse(tmp_path: Path, mounts: Mounts) -> None:
    if not shutil.which("bindfs") or not os.path.exists("/dev/fuse"):
        pytest.skip("needs bindfs and /dev/fuse (a FUSE file system to try)")
    (tmp_path / "real").mkdir()
    (tmp_path / "fuse").mkdir()
    subprocess.run(["bindfs", str(tmp_path / "real"), str(tmp_path / "fuse")], check=True)
    mounts.targets.append(tmp_path / "fuse")
    refusal = filesystem_marks_refusal(str(tmp_path / "fuse"))
    assert refusal is not None and "fuse" in refusal and "no file system id" in refusal


@pytest.mark.parametrize(("dropped", "reason"), [
    ("sys_admin", "a fanotify filesystem mark needs CAP_SYS_ADMIN"),
    ("dac_read_search", "making file handles into paths needs CAP_DAC_READ_SEARCH"),
])
def test_the_probe_names_the_missing_capability(tmp_path: Path, dropped: str, reason: str) -> None:
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv (util-linux) to drop a capability")
    probe = ("import sys; from pirsyncd.source.fanotify_probe import filesystem_marks_refusal as r;"
             " print(r(sys.argv[1]))")
    result = subprocess.run(["setpriv", f"--bounding-set=-{dropped}", f"--inh-caps=-{dropped}", sys.executable,
                             "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True,
                            cwd=REPOSITORY)
    assert result.stdout.strip() == reason


def test_the_kernel_s_events_become_the_changes_of_the_source(marked: tuple[Fanotify, Path]) -> None:
    """The translator over real events: a source below the marked tmpfs root, with work done
    beside it that must cost nothing, renames within, into and out of it, a create and a
    delete merged, and at the end the source itself deleted."""
    group, root = marked
    source, beside = root / "src", root / "beside"
    source.mkdir()
    beside.mkdir()
    (source / "moving").mkdir()
    handle_type, handle, _ = name_to_handle_at(str(source))
    parse_events(group.read())  # what came before the translator starts
    lookup = KernelLookup(str(source))
    translator = FanotifyTranslator(str(source), (handle_type, handle), HandleResolver(lookup), is_dir_on_disk)
    changes = []
    try:
        (source / "a" / "b").mkdir(parents=True)
        (source / "a" / "b" / "f").write_text("x")
        (beside / "noise").write_text("x")
        os.rename(source / "a" / "b" / "f", source / "a" / "g")
        (beside / "in").write_text("x")
        os.rename(beside / "in", source / "in")
        os.rename(source / "moving", beside / "out")
        (source / "brief").write_text("x")
        os.unlink(source / "brief")
        os.chmod(source / "a", 0o700)
        changes += translator.feed(read_until(group, lambda each: each.is_dir and each.mask & FAN_ATTRIB))
        shutil.rmtree(source)
        # Its own DELETE_SELF waits for the last reference (the lookup's descriptor): the
        # deletion of its name tells.
        changes += translator.feed(read_until(group, lambda each: each.mask & FAN_DELETE and each.entry
                                              and each.entry.name == "src"))
    finally:
        lookup.close()
    # A file's create comes apart from its write and close (only these carry its own handle);
    # brief's create and delete merged, its close after them.
    assert changes[:11] == [
        Change(ChangeKind.NEW_DIR, "a", True), Change(ChangeKind.NEW_DIR, "a/b", True),
        Change(ChangeKind.WRITING, "a/b/f"), Change(ChangeKind.CLOSED, "a/b/f"),
        Change(ChangeKind.MOVED, "a/g", False, "a/b/f"), Change(ChangeKind.CLOSED, "in"),
        Change(ChangeKind.REMOVED, "moving", True), Change(ChangeKind.REMOVED, "brief"),
        Change(ChangeKind.CLOSED, "brief"), Change(ChangeKind.CHANGED, "a", True),
        Change(ChangeKind.REMOVED, "in")]
    assert changes[-1] == Change(ChangeKind.ROOT_LOST)
    assert translator.outside >= 2  # the work beside the source


def test_events_read_after_their_directory_moved_send_it_whole(marked: tuple[Fanotify, Path]) -> None:
    """mv a/f b/g; mv a c, read together: a's handle resolves to c, so the first event says
    c/f; the directory rename after it is then sent whole. The root's own attribute change is
    told by its handle (name_to_handle_at's equals the events')."""
    group, root = marked
    source = root / "src"
    for directory in ("a", "b"):
        (source / directory).mkdir(parents=True)
    (source / "a" / "f").write_text("x")
    handle_type, handle, _ = name_to_handle_at(str(source))
    parse_events(group.read())
    lookup = KernelLookup(str(source))
    translator = FanotifyTranslator(str(source), (handle_type, handle), HandleResolver(lookup), is_dir_on_disk)
    try:
        os.rename(source / "a" / "f", source / "b" / "g")
        os.rename(source / "a", source / "c")
        os.chmod(source, 0o750)
        changes = translator.feed(read_until(group, lambda each: each.mask & FAN_ATTRIB))
    finally:
        lookup.close()
    assert changes == [Change(ChangeKind.MOVED, "b/g", False, "c/f"), Change(ChangeKind.REMOVED, "a", True),
                       Change(ChangeKind.NEW_DIR, "c", True), Change(ChangeKind.CHANGED, ".", True)]
