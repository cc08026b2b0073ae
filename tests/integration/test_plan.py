"""``pirsyncd plan`` (issue 26): before the first start, what the full sync would create, update
and delete at a destination that already holds data, changing nothing; 65 past max_delete or
when the destination has nothing in common with the source. A dry run does not depend on the
deletion path: each test runs once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import run_pirsyncd
from tests.support.trees import write_file

pytestmark = pytest.mark.auto_deletion_mode


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry below ``root``: mode, mtime and content (a file's), to show nothing changed."""
    entries = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = Path(directory) / name
            status = path.lstat()
            entries[str(path.relative_to(root))] = (status.st_mode, status.st_mtime_ns,
                                                    path.read_bytes() if path.is_file() else b"")
    return entries


def same_times(original: Path, copy: Path) -> None:
    status = original.stat()
    os.utime(copy, ns=(status.st_atime_ns, status.st_mtime_ns))


def make_instance(tmp_path: Path, extra: str = "") -> tuple[Path, Path, Path]:
    source, destination, config_dir = tmp_path / "source", tmp_path / "destination", tmp_path / "conf"
    for name in ("kept/same0", "kept/same1", "kept/same2"):  # already there: neither sent nor listed
        write_file(source / name, f"{name}\n")
        write_file(destination / name, f"{name}\n")
        same_times(source / name, destination / name)
    same_times(source / "kept", destination / "kept")
    write_file(source / "web" / "index.html", "<h1>new</h1>\n")
    write_file(source / "changed.txt", "new text\n")
    write_file(destination / "changed.txt", "old\n")
    write_file(source / "scratch.tmp", "excluded\n")
    write_file(destination / "stale" / "old.html", "gone from the source\n")
    write_file(destination / "stale" / "odd\nname", "a newline in its name\n")
    write_file(destination / "leftover.txt", "gone too\n")
    config_dir.mkdir()
    (config_dir / "www.conf").write_text(f"[sync]\nsource = {source}\ndestination = {destination}\n"
                                         f"exclude = *.tmp\n{extra}")
    return source, destination, config_dir


def plan_json(config_dir: Path, *arguments: str) -> tuple[int, dict[str, Any], str]:
    result = run_pirsyncd("plan", "www", "--config-dir", str(config_dir), "--json", *arguments)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def test_plan_shows_what_the_full_sync_would_create_update_and_delete_and_changes_nothing(tmp_path: Path) -> None:
    source, destination, config_dir = make_instance(tmp_path)
    before = snapshot(destination), snapshot(source)
    code, plan, errors = plan_json(config_dir)
    assert code == 0, errors
    assert (snapshot(destination), snapshot(source)) == before, "a plan must change nothing"
    [www] = plan["destinations"]
    assert (www["error"], www["problems"]) == (None, [])
    assert www["deleted"]["count"] == 4
    assert sorted(www["deleted"]["first"]) == ["leftover.txt", "stale", "stale/odd\nname", "stale/old.html"]
    assert set(www["created"]["first"]) == {"web", "web/index.html"}, www["created"]
    assert "changed.txt" in www["updated"]["first"], www["updated"]
    assert not any(path.startswith("kept/") for kind in ("created", "updated") for path in www[kind]["first"]), www
    assert not any(path.endswith(".tmp") for kind in ("created", "deleted") for path in www[kind]["first"])
    assert www["bytes"] == len("<h1>new</h1>\n") + len("new text\n")

    text = run_pirsyncd("plan", "www", "--config-dir", str(config_dir), "--first", "2")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"destination: {destination}"
    assert lines[1].startswith("  would create 2 entries, update ") and ", delete 4 (" in lines[1], lines
    assert lines[2] == "  deletions (first 2 of 4):", lines
    assert "  creations (first 2 of 2):" in lines and "  updates (first 1 of 1):" in lines, lines
    assert "    stale/odd\\nname" in lines, "a name on one line, its newline shown escaped"


def test_plan_fails_when_the_deletions_would_exceed_max_delete(tmp_path: Path) -> None:
    _, destination, config_dir = make_instance(tmp_path, "max_delete = 2\n")
    before = snapshot(destination)
    code, plan, errors = plan_json(config_dir)
    assert code == 65, errors
    assert errors.strip() == ("pirsyncd plan: destination: the full sync would delete 4 entries, more than "
                              "max_delete (2): the daemon would hold it; check the destination, or raise max_delete "
                              "if the deletions are intended")
    assert plan["destinations"][0]["deleted"]["count"] == 4, "every deletion is counted, past max_delete too"
    assert snapshot(destination) == before
    assert plan_json(config_dir, "--max-delete", "4")[0] == 0, "an option flag overrides the file"


def test_plan_fails_on_a_destination_with_nothing_in_common_with_the_source(tmp_path: Path) -> None:
    source, destination = tmp_path / "source", tmp_path / "home-of-someone"
    write_file(source / "site" / "index.html", "site\n")
    for name in (".bashrc", "Documents/letter.odt", "Pictures/cat.jpg"):
        write_file(destination / name, "mine\n")
    before = snapshot(destination)
    result = run_pirsyncd("plan", "--source", str(source), "--destination", str(destination))
    assert result.returncode == 65, result.stdout + result.stderr
    assert result.stderr.strip() == ("pirsyncd plan: home-of-someone: the destination looks wrong: it holds 5 "
                                     "entries and none of the source's 2; check destination (is it the right "
                                     "directory?)")
    assert "  deletions (first 5 of 5):" in result.stdout
    assert snapshot(destination) == before


def test_plan_of_an_instance_that_does_not_exist_says_so_in_one_line(tmp_path: Path) -> None:
    result = run_pirsyncd("plan", "nosuch", "--config-dir", str(tmp_path))
    assert result.returncode == 78
    assert result.stderr.strip() == (f"pirsyncd: {tmp_path}/nosuch.conf: no such file; create it (see "
                                     "/etc/pirsyncd/example.conf or pirsyncd --sample-config)")
