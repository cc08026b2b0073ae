"""Real programs write into the source, not Python calls: cp -r, rm -r, ln -sfn, mv -T, sed -i,
git clone and checkout between distant commits, tar -x, rsync -a --delete. Each step ends with
``pirsyncd wait`` and the trees equal at once; each test ends with a settled daemon.

Every program runs from an argv list, never a shell string.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import REPO, Daemon
from tests.support.trees import write_file
from tests.support.workload import HOSTILE_NAMES


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run one program to completion; fail the test with its output if it fails."""
    result = subprocess.run([str(word) for word in argv], cwd=cwd, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


class Mirror:
    """A running daemon on ``source`` -> ``destination``, with ``scratch`` outside both."""

    def __init__(self, tmp_path: Path) -> None:
        self.source, self.destination = tmp_path / "source", tmp_path / "destination"
        self.scratch = tmp_path / "scratch"
        for directory in (self.source, self.destination, self.scratch):
            directory.mkdir()
        self.daemon = Daemon(tmp_path / "daemon", "--source", str(self.source),
                             "--destination", str(self.destination), "--delay", "0")

    def in_sync(self) -> None:
        self.daemon.assert_in_sync(self.source, self.destination)

    def settled(self) -> None:
        self.daemon.assert_settled(self.source / "after-the-programs", self.destination / "after-the-programs")
        self.daemon.assert_watching(self.source)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    mirror = Mirror(tmp_path)
    with mirror.daemon:
        yield mirror
        mirror.settled()


def build_tree(root: Path, files: int = 30) -> None:
    """A small tree with nested directories, hostile names, a symlink and an empty directory."""
    for index in range(files):
        name = HOSTILE_NAMES[index % len(HOSTILE_NAMES)]
        write_file(root / f"level{index % 3}" / f"sub{index % 4}" / name, f"{index} {name}\n" * (index + 1))
    (root / "empty").mkdir(parents=True)
    (root / "level0" / "link").symlink_to("sub0")


def test_cp_r_and_rm_r(mirror: Mirror) -> None:
    build_tree(mirror.scratch / "tree")
    run("cp", "-r", mirror.scratch / "tree", mirror.source / "copy")
    run("cp", "-a", mirror.source / "copy", mirror.source / "second copy")
    mirror.in_sync()
    run("rm", "-r", mirror.source / "copy" / "level1")
    run("cp", "-r", mirror.source / "second copy" / "level2", mirror.source / "copy" / "level1")
    run("rm", "-rf", mirror.source / "second copy")
    mirror.in_sync()


def test_releases_switched_with_ln_sfn_and_mv_t_and_pruned(mirror: Mirror) -> None:
    """A deploy: each release a cp -r of the last plus changes, ``current`` switched by ln -sfn or
    by a new link renamed over it (mv -T), the oldest release removed with rm -r."""
    application = mirror.source / "app"
    releases = application / "releases"
    build_tree(releases / "r1")
    run("ln", "-sfn", "releases/r1", application / "current")
    mirror.in_sync()
    for number in range(2, 7):
        release = releases / f"r{number}"
        run("cp", "-r", releases / f"r{number - 1}", release)
        write_file(release / "version", f"{number}\n")
        if number % 2:
            run("ln", "-sfn", f"releases/r{number}", application / "current")
        else:
            run("ln", "-s", f"releases/r{number}", application / "current.new")
            run("mv", "-T", application / "current.new", application / "current")
        write_file(application / "current" / "written-through-current", f"{number}\n")
        if number > 3:
            run("rm", "-r", releases / f"r{number - 3}")
        mirror.in_sync()


def test_sed_in_place(mirror: Mirror) -> None:
    config = mirror.source / "etc" / "app.conf"
    write_file(config, "".join(f"key{index} = value{index}\n" for index in range(200)))
    mirror.in_sync()
    run("sed", "-i", "s/value1/VALUE1/", config)
    mirror.in_sync()
    # Same size, and sed -i's rename over the file in a directory renamed right after.
    run("sed", "-i", "s/value2/eulav2/", config)
    run("mv", "-T", mirror.source / "etc", mirror.source / "etc.renamed")
    run("sed", "-i", "-e", "s/key3/KEY3/", mirror.source / "etc.renamed" / "app.conf")
    mirror.in_sync()


def test_git_checkout_between_distant_commits(mirror: Mirror) -> None:
    """A clone of this checkout's own repository, switched between its first commit and HEAD."""
    clone = mirror.source / "clone"
    run("git", "clone", "--quiet", "--no-hardlinks", REPO, clone)
    mirror.in_sync()
    first = run("git", "-C", clone, "rev-list", "--max-parents=0", "HEAD").split()[0]
    head = run("git", "-C", clone, "rev-parse", "HEAD").strip()
    for commit in (first, head, first, head):
        run("git", "-C", clone, "checkout", "--quiet", "--detach", commit)
        mirror.in_sync()


def test_tar_x_over_and_beside_a_tree(mirror: Mirror) -> None:
    build_tree(mirror.scratch / "tree")
    archive = mirror.scratch / "tree.tar"
    run("tar", "-cf", archive, "-C", mirror.scratch, "tree")
    run("tar", "-xf", archive, "-C", mirror.source)
    mirror.in_sync()
    # Extracted again over itself after changes: tar unlinks and recreates each file.
    write_file(mirror.source / "tree" / "level0" / "sub0" / "-", "changed\n")
    (mirror.source / "tree" / "empty").rmdir()
    (mirror.source / "tree" / "empty").write_text("now a file\n")
    run("tar", "-xf", archive, "--recursive-unlink", "-C", mirror.source)
    mirror.in_sync()


def test_rsync_a_delete_into_the_source(mirror: Mirror) -> None:
    upstream = mirror.scratch / "upstream"
    build_tree(upstream)
    run("rsync", "-a", "--delete", f"{upstream}/", f"{mirror.source / 'copy'}/")
    mirror.in_sync()
    run("rm", "-r", upstream / "level1")
    write_file(upstream / "level2" / "sub0" / "new", "new\n")
    (upstream / "level0" / "link").unlink()
    (upstream / "level0" / "link").mkdir()
    run("rsync", "-a", "--delete", f"{upstream}/", f"{mirror.source / 'copy'}/")
    mirror.in_sync()


def test_cp_r_rm_r_ln_s_then_writes_inside_the_original(mirror: Mirror) -> None:
    """lsyncd #290 with the real programs: the copy replaced by a symlink to the original, then
    files and directories written inside the original at once."""
    top = mirror.source / "top" / "d1"
    # Many subdirectories: the walk of the copy is still going when the copy becomes a symlink.
    for index in range(150):
        (top / "x" / "y" / f"s{index}").mkdir(parents=True)
    (top / "z").mkdir()
    (mirror.source / "d2").mkdir()
    write_file(top / "x" / "g", "f\n")
    mirror.in_sync()
    for round_number in range(4):
        copy = mirror.source / "d2" / f"d1-{round_number}"
        run("cp", "-r", top, copy)
        run("rm", "-r", copy)
        run("ln", "-s", "../top/d1", copy)
        write_file(top / "x" / f"w{round_number}", "w\n")
        (top / "z" / f"n{round_number}").mkdir()
        write_file(top / "z" / f"n{round_number}" / "q", "q\n")
        write_file(top / "x" / "y" / f"s{round_number}" / "deep", "deep\n")
        mirror.in_sync()
