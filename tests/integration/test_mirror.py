"""The real daemon, real inotify (and fanotify, for the tests marked fanotify_too), real rsync:
the destination must equal the source."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.support import backends
from tests.support.daemon import Daemon, overflow_the_queue, run_pirsyncd, start_with_a_small_queue
from tests.support.trees import differences, wait_for, wait_until_equal, write_file
from tests.support.workload import HOSTILE_NAMES, LONG_NAMES


@pytest.mark.fanotify_too
def test_creates_overwrites_deletes_and_recursive_deletes(mirror: tuple[Path, Path, Daemon]) -> None:
    source, destination, daemon = mirror
    for index in range(20):
        write_file(source / f"dir{index % 3}" / f"file{index}", f"content {index}\n")
    wait_until_equal(source, destination, 20)
    write_file(source / "dir0" / "file0", "overwritten with longer content\n")
    (source / "dir1" / "file1").unlink()
    shutil.rmtree(source / "dir2")
    (source / "empty-dir").mkdir()
    wait_until_equal(source, destination, 20)
    daemon.wait_synced()
    assert differences(source, destination) == []


@pytest.mark.fanotify_too
def test_renames_within_into_and_out_of_the_tree(mirror: tuple[Path, Path, Daemon], tmp_path: Path) -> None:
    source, destination, _daemon = mirror
    outside = tmp_path / "outside"
    write_file(source / "a" / "b" / "c" / "deep", "deep\n")
    write_file(source / "a" / "file", "file\n")
    write_file(source / "other", "other\n")
    write_file(outside / "incoming" / "sub" / "f", "incoming\n")
    wait_until_equal(source, destination, 20)
    (source / "a").rename(source / "renamed")  # directory within the tree
    (source / "other").rename(source / "renamed" / "b" / "other-moved")  # file across subtrees
    (outside / "incoming").rename(source / "incoming")  # into the tree
    (source / "renamed" / "b" / "c").rename(outside / "gone")  # out of the tree
    write_file(source / "x", "x\n")
    write_file(source / "y", "y\n")
    (source / "x").rename(source / "y")  # over an existing file
    wait_until_equal(source, destination, 20)
    # Changes inside a renamed directory right after its rename land under the new name.
    (source / "renamed").rename(source / "renamed-again")
    write_file(source / "renamed-again" / "b" / "after-rename", "after\n")
    wait_until_equal(source, destination, 20)


@pytest.mark.fanotify_too
def test_directory_created_and_filled_at_once_and_deep_trees(mirror: tuple[Path, Path, Daemon]) -> None:
    source, destination, _ = mirror
    deep = source.joinpath(*[f"level{depth}" for depth in range(40)])
    deep.mkdir(parents=True)
    write_file(deep / "bottom", "bottom\n")
    burst = source / "burst"
    burst.mkdir()
    for index in range(200):
        write_file(burst / f"sub{index % 10}" / f"file{index}", f"{index}\n")
    wait_until_equal(source, destination, 30)


@pytest.mark.fanotify_too
def test_hostile_file_names_are_files_never_options(mirror: tuple[Path, Path, Daemon]) -> None:
    source, destination, _ = mirror
    for name in (*HOSTILE_NAMES, *LONG_NAMES):
        write_file(source / name, f"named {name!r}\n")
        write_file(source / "dir" / name / name, "nested\n")
    wait_until_equal(source, destination, 30)
    for name in HOSTILE_NAMES[:6]:
        (source / name).rename(source / f"{name}.moved")
    (source / "--delete").mkdir()
    wait_until_equal(source, destination, 30)


def test_changes_rsync_quick_check_cannot_see(mirror: tuple[Path, Path, Daemon]) -> None:
    source, destination, _ = mirror
    target = source / "same-size"
    write_file(target, "AAAA")
    write_file(source / "truncate-me", "some content\n")
    (source / "becomes-file").mkdir()
    write_file(source / "becomes-file" / "inner", "inner\n")
    (source / "becomes-link").mkdir()
    wait_until_equal(source, destination, 20)
    before = os.stat(target)
    write_file(target, "BBBB")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    (source / "truncate-me").write_bytes(b"")
    shutil.rmtree(source / "becomes-file")
    write_file(source / "becomes-file", "now a file\n")
    (source / "becomes-link").rmdir()
    os.symlink("same-size", source / "becomes-link")
    os.symlink("/nonexistent/target", source / "dangling")
    os.chmod(source / "truncate-me", 0o600)
    wait_until_equal(source, destination, 20)
    assert (destination / "same-size").read_bytes() == b"BBBB"


def test_write_through_a_second_hard_link_name(mirror: tuple[Path, Path, Daemon]) -> None:
    source, destination, _ = mirror
    write_file(source / "first", "one\n")
    os.link(source / "first", source / "second")
    wait_until_equal(source, destination, 20)
    with open(source / "second", "w") as stream:
        stream.write("two\n")
    wait_until_equal(source, destination, 20)


def test_a_file_being_written_waits_for_its_close_and_holds_nothing_else_back(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """A file open for writing is kept aside (here 10 x 0.5 s at most); what else changed goes
    after the delay; the close sends the file whole; ``pirsyncd wait`` sends it as it is."""
    source, destination = trees
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.5")
    with daemon.start():
        with open(source / "big", "wb") as stream:
            stream.write(b"first half\n")
            stream.flush()
            write_file(source / "small", "small\n")
            os.link(source / "small", source / "second-name")  # created without a close: not kept aside
            os.symlink("big", source / "link")  # nor this
            wait_for(lambda: all(os.path.lexists(destination / name) for name in ("small", "second-name", "link")),
                     20, lambda: "the other changes were held back\n" + daemon.describe())
            assert not (destination / "big").exists(), "a file still being written was sent"
            stream.write(b"second half\n")
            stream.flush()
            waited = run_pirsyncd("wait", "--status-file", str(daemon.status_file), "--timeout", "3")
            assert waited.returncode == 0, waited.stderr + daemon.describe()
            assert (destination / "big").read_bytes() == b"first half\nsecond half\n"
            stream.write(b"the end\n")
        wait_until_equal(source, destination, 20)
        daemon.wait_synced()


def test_under_sustained_change_each_file_arrives_within_the_delay_while_writing_goes_on(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """At the default delay (1 s) a writer never stops long enough for a quiet period: the files
    it wrote early must still reach the destination while it goes on writing, well before the
    old cap of 10 x delay, round after round; once it stops, the mirror is complete at once."""
    source, destination = trees
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination))
    written: list[str] = []

    def write_one() -> None:
        name = f"dir{len(written) % 10}/file{len(written)}"
        write_file(source / name, f"{name}\n")
        written.append(name)

    def wait_arrived_while_writing(name: str) -> None:
        def arrived() -> bool:
            write_one()  # at every poll of the condition: the writer never pauses
            target = destination / name
            return target.is_file() and target.read_text() == f"{name}\n"

        # 5 x delay: four seconds of slack for a loaded machine, and half the old cap.
        wait_for(arrived, 5, lambda: f"{name} not mirrored while {len(written)} files were written after it\n"
                 + daemon.describe(), poll=0.02)

    with daemon.start():
        for _round in range(3):
            write_one()
            wait_arrived_while_writing(written[-1])
        runs = sum(count for *_kind, count in daemon.status()["counters"]["runs"])
        assert runs < len(written) / 10, f"{runs} rsync runs for {len(written)} files: a run per change"
        wait_until_equal(source, destination, 20)
        daemon.wait_synced()


@pytest.mark.fanotify_too
def test_queue_overflow_is_logged_and_recovered(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    daemon = start_with_a_small_queue(lambda: Daemon(
        tmp_path / "daemon", "--source", str(source), "--destination", str(destination), "--delay", "0.1").start())
    with daemon:
        overflow_the_queue(daemon, source, destination)


def test_sigterm_sends_pending_changes_before_exit(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "3600")
    with daemon.start():
        for index in range(10):
            write_file(source / f"pending{index}", f"{index}\n")
        wait_for(lambda: daemon.status().get("pending", 0) > 0, 10, "changes never became pending")
        assert daemon.stop() == 0
    assert differences(source, destination) == []


@pytest.mark.fanotify_too
def test_refuses_to_wipe_when_the_source_is_replaced_by_an_empty_directory(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    write_file(source / "precious", "keep me\n")
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1")
    with daemon.start():
        source.rename(tmp_path / "source-moved-away")
        source.mkdir()  # what an unmounted file system looks like
        status = daemon.wait_state("source-lost")
        assert "mirror kept" in status["status_line"]
        daemon.wait_log("syncing stopped so the mirror is not wiped")
        # Another directory at the source path is not the source, even once it has content.
        write_file(source / "other", "from the directory swapped in\n")
        daemon.wait_log("reload to mirror", 30)
        assert daemon.status()["state"] == "source-lost"
        assert sorted(os.listdir(destination)) == ["precious"]
        # A reload says the directory now there is the source: syncing resumes with a full sync.
        (tmp_path / "source-moved-away" / "precious").rename(source / "precious")
        daemon.signal(signal.SIGHUP)
        daemon.wait_state("in-sync", 30)
        wait_until_equal(source, destination, 20)
    assert (destination / "precious").read_text() == "keep me\n"


def test_refuses_to_start_with_an_empty_source_and_a_full_destination(trees: tuple[Path, Path]) -> None:
    source, destination = trees
    write_file(destination / "precious", "keep me\n")
    result = run_pirsyncd("--source", str(source), "--destination", str(destination))
    assert result.returncode == 65, result.stderr
    assert "refusing to wipe the mirror" in result.stderr
    assert "Traceback" not in result.stderr
    assert (destination / "precious").exists()


@pytest.mark.fanotify_too
def test_source_root_deleted_keeps_the_mirror(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    write_file(source / "a" / "precious", "keep\n")
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1")
    with daemon.start():
        shutil.rmtree(source)
        daemon.wait_state("source-lost")
        assert daemon.alive()
    assert (destination / "a" / "precious").read_text() == "keep\n"


@pytest.mark.fanotify_too
def test_excluded_paths_are_neither_sent_nor_watched(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1", "--exclude", "*.tmp", "--exclude", "/cache/")
    with daemon.start():
        write_file(source / "keep.txt", "keep\n")
        write_file(source / "drop.tmp", "drop\n")
        write_file(source / "cache" / "big", "cached\n")
        write_file(source / "sub" / "cache" / "kept", "only the top cache/ is excluded\n")
        write_file(source / "sub" / "x.tmp", "drop\n")
        daemon.wait_synced()
        assert (destination / "keep.txt").exists() and (destination / "sub" / "cache" / "kept").exists()
        assert not (destination / "drop.tmp").exists() and not (destination / "cache").exists()
        assert not (destination / "sub" / "x.tmp").exists()
        (source / "sub").rename(source / "cache2")
        (source / "keep.txt").rename(source / "now.tmp")  # renamed into an excluded name: gone
        (source / "cache").rename(source / "uncached")  # renamed out of an excluded name: sent
        daemon.wait_synced()
        assert not (destination / "keep.txt").exists() and not (destination / "now.tmp").exists()
        assert (destination / "uncached" / "big").read_text() == "cached\n"
        assert (destination / "cache2" / "cache" / "kept").exists()


def test_a_reload_with_new_excludes_keeps_the_change_sequence_for_pirsyncd_wait(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """A reload that watches the source anew must not count changes from 0 again: ``pirsyncd
    wait`` would take the reload's full sync as done before it ran."""
    source, destination = trees
    config = tmp_path / "www.conf"
    config.write_text(f"[sync]\nsource = {source}\ndestination = {destination}\ndelay = 1\nexclude = *.tmp\n")
    daemon = Daemon(tmp_path / "daemon", "--config", str(config))
    with daemon.start():
        for index in range(3):
            write_file(source / f"f{index}", f"{index}\n")
            assert run_pirsyncd("wait", "--status-file", str(daemon.status_file), "--timeout", "30").returncode == 0
        write_file(source / "now-sent.tmp", "excluded until the reload\n")
        seen = daemon.status()["change_seq"]
        assert seen >= 3
        config.write_text(config.read_text().replace("exclude = *.tmp\n", ""))
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reloaded the configuration")
        assert daemon.status()["change_seq"] >= seen
        waited = run_pirsyncd("wait", "--status-file", str(daemon.status_file), "--timeout", "30")
        assert waited.returncode == 0, waited.stderr
        assert (destination / "now-sent.tmp").exists(), "pirsyncd wait returned before the reload's full sync"
        daemon.wait_synced()
        assert differences(source, destination) == []


@pytest.mark.fanotify_too
def test_overflow_during_renames_and_new_directories_rebuilds_the_watches(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    source, destination = trees
    (source / "d").mkdir()
    daemon = start_with_a_small_queue(lambda: Daemon(
        tmp_path / "daemon", "--source", str(source), "--destination", str(destination), "--delay", "0.1").start(),
        events=32)
    with daemon:
        daemon.signal(signal.SIGSTOP)
        try:
            for index in range(200):  # fills the queue first, so the two events below are lost
                write_file(source / "d" / f"f{index}", f"{index}\n")
            (source / "n").mkdir()
            (source / "d").rename(source / "e")
        finally:
            daemon.signal(signal.SIGCONT)
        daemon.wait_log(f"{backends.current()} queue overflowed")
        wait_until_equal(source, destination, 30)
        write_file(source / "n" / "new-after-overflow", "n\n")  # needs a watch made after the overflow
        write_file(source / "e" / "renamed-after-overflow", "e\n")  # needs the watch map to say e, not d
        wait_until_equal(source, destination, 30)
