"""Hooks: on_sync gets the environment and the changed paths; on_failure is told when a destination
fails and when it recovers; a hook that hangs is killed at hook_timeout while syncing goes on at
full speed; a failing hook is counted, not retried, and does not stop syncing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.support.daemon import Daemon
from tests.support.fakes import FAKE_RSYNC
from tests.support.trees import wait_for, wait_until_equal, write_file

# Records one call: its PIRSYNCD_* environment and its stdin split at NUL, as OUT/N.json.
RECORDER = """\
import json, os, sys
out = sys.argv[1]
paths = [os.fsdecode(path) for path in sys.stdin.buffer.read().split(b"\\0")[:-1]]
env = {key: value for key, value in os.environ.items() if key.startswith("PIRSYNCD_")}
number = len(os.listdir(out))
with open(os.path.join(out, f"{number}.tmp"), "w") as stream:
    json.dump({"env": env, "paths": paths}, stream)
os.rename(os.path.join(out, f"{number}.tmp"), os.path.join(out, f"{number}.json"))
print(f"recorded call {number} with {len(paths)} paths")
"""



def recorder(tmp_path: Path, name: str) -> tuple[str, Path]:
    """The hook command line of a recorder, and the directory its calls land in."""
    script, out = tmp_path / f"{name}.py", tmp_path / f"{name}-calls"
    script.write_text(RECORDER)
    out.mkdir()
    return f"{sys.executable} {script} {out}", out


def calls(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"{number}.json").read_text())
            for number in range(len(list(out.glob("*.json"))))]


def named_daemon(tmp_path: Path, source: Path, destination: Path, hooks: str, *extra: str,
                 env: dict[str, str] | None = None) -> Daemon:
    """Instance "www" from a config directory, with a [hooks] section."""
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "www.conf").write_text(f"[sync]\nsource = {source}\ndestination = {destination}\ndelay = 0.1\n"
                                         f"retry_max_interval = 2\n\n[hooks]\n{hooks}\n")
    return Daemon(tmp_path / "daemon", "www", "--config-dir", str(config_dir), *extra, env=env)


def test_on_sync_gets_the_environment_and_the_changed_paths_on_stdin(tmp_path: Path,
                                                                    trees: tuple[Path, Path]) -> None:
    source, destination = trees
    command, out = recorder(tmp_path, "on-sync")
    write_file(source / "before", "before\n")
    with named_daemon(tmp_path, source, destination, f"on_sync = {command}").start() as daemon:
        first = wait_for(lambda: calls(out), 10, lambda: f"on_sync never ran after the full sync:\n{daemon.log()}")[0]
        assert first["env"] == {
            "PIRSYNCD_HOOK": "on_sync", "PIRSYNCD_EVENT": "sync", "PIRSYNCD_INSTANCE": "www",
            "PIRSYNCD_DESTINATION": "destination", "PIRSYNCD_KIND": "full", "PIRSYNCD_PATHS": "1",
            "PIRSYNCD_BYTES": first["env"]["PIRSYNCD_BYTES"], "PIRSYNCD_RSYNC_STATUS": "0", "PIRSYNCD_ERROR": "",
            "PIRSYNCD_COMPLETE": "1"}
        # A full sync lists what rsync changed: the file it created.
        assert int(first["env"]["PIRSYNCD_BYTES"]) > 0 and first["paths"] == ["before"]
        wanted = {"new file", "line\nbreak", "renamed", "to-rename", "before"}  # a rename's old path too
        write_file(source / "new file", "1\n")
        write_file(source / "line\nbreak", "2\n")
        write_file(source / "sub dir" / "deep", "3\n")
        write_file(source / "to-rename", "4\n")
        wait_until_equal(source, destination, 20)
        (source / "to-rename").rename(source / "renamed")
        (source / "before").unlink()
        wait_until_equal(source, destination, 20)
        daemon.wait_synced()

        def seen() -> set[str] | None:
            paths = {path for call in calls(out)[1:] for path in call["paths"]}
            return paths if wanted <= paths and paths & {"sub dir", "sub dir/deep"} else None

        wait_for(seen, 10, lambda: f"on_sync was not told every path: {calls(out)}\n{daemon.log()}")
        for call in calls(out)[1:]:
            env = call["env"]
            assert env["PIRSYNCD_KIND"] == "batch" and env["PIRSYNCD_EVENT"] == "sync"
            assert env["PIRSYNCD_PATHS"] == str(len(call["paths"])) and env["PIRSYNCD_RSYNC_STATUS"] == "0"
        daemon.wait_log("on_sync: recorded call 1 with")  # its output is in the log
        wait_for(lambda: daemon.status()["hooks"]["on_sync"] == {"ok": len(calls(out))}, 10,
                 lambda: f"{daemon.status()['hooks']} after {len(calls(out))} calls")


def test_on_sync_gets_every_file_rsync_created_updated_or_deleted_also_inside_directories(
        tmp_path: Path, trees: tuple[Path, Path]) -> None:
    """A new directory is listed as one path but sent whole: the hook gets each file of it; a
    deleted directory, each entry deleted with it; names with a newline or past ASCII, exactly."""
    source, destination = trees
    command, out = recorder(tmp_path, "on-sync")
    for name in ("old/a", "old/deep/b", "keep/c"):
        write_file(source / name, f"{name}\n")
    with named_daemon(tmp_path, source, destination, f"on_sync = {command}").start() as daemon:
        wait_for(lambda: calls(out), 10, lambda: f"on_sync never ran after the full sync:\n{daemon.log()}")
        daemon.wait_synced()
        made = len(calls(out))
        staging = tmp_path / "staging"
        for name in ("index.html", "img/logo.png", "odd\nname", "caf\u00e9.txt"):
            write_file(staging / name, f"{name}\n")
        staging.rename(source / "web")  # one event: a directory moved in, sent whole
        (source / "old" / "deep" / "b").unlink()
        (source / "old" / "deep").rmdir()
        (source / "old" / "a").unlink()
        (source / "old").rmdir()
        write_file(source / "keep" / "c", "rewritten\n")
        wait_until_equal(source, destination, 20)
        daemon.wait_synced()

        wanted = {"web", "web/index.html", "web/img", "web/img/logo.png", "web/odd\nname", "web/caf\u00e9.txt",
                  "old", "old/a", "old/deep", "old/deep/b", "keep/c"}

        def told() -> set[str] | None:
            paths = {path for call in calls(out)[made:] for path in call["paths"]}
            return paths if wanted <= paths else None

        paths = wait_for(told, 10, lambda: f"on_sync was not told every entry: {calls(out)[made:]}\n{daemon.log()}")
        assert paths - wanted <= {"keep"}, paths  # keep's own mtime may be metadata rsync updated
        for call in calls(out)[made:]:
            assert call["env"]["PIRSYNCD_COMPLETE"] == "1" and call["env"]["PIRSYNCD_KIND"] == "batch", call


def test_a_hanging_hook_is_killed_at_its_time_limit_while_syncing_goes_on(tmp_path: Path,
                                                                        trees: tuple[Path, Path]) -> None:
    source, destination = trees
    pids = tmp_path / "hook-pids"
    hook = f"on_sync = sh -c 'echo $$ >> {pids}; exec sleep 1000'\nhook_timeout = 20"
    with named_daemon(tmp_path, source, destination, hook).start() as daemon:
        wait_for(lambda: pids.exists() and pids.read_text(), 10, "on_sync never started")
        first_pid = int(pids.read_text().split()[0])
        for index in range(5):  # while the hook hangs, every change is mirrored all the same
            write_file(source / f"f{index}", f"{index}\n")
            wait_until_equal(source, destination, 15)
            if os.path.exists(f"/proc/{first_pid}"):
                assert len(pids.read_text().split()) == 1, "a second call started while the first still ran"
        assert os.path.exists(f"/proc/{first_pid}"), "the hook ended before the changes were mirrored"
        daemon.wait_log("on_sync hook killed: it ran longer than hook_timeout (20 s)", 40)
        wait_for(lambda: not os.path.exists(f"/proc/{first_pid}"), 10, "the hung hook is still running")
        # The calls that waited behind it were coalesced into one more call (which hangs too).
        wait_for(lambda: len(pids.read_text().split()) == 2, 10, lambda: pids.read_text())
        write_file(source / "after", "after\n")
        wait_until_equal(source, destination, 5)
        assert daemon.status()["hooks"]["on_sync"].get("timeout", 0) >= 1
    assert len(pids.read_text().split()) <= 3


def test_a_failing_hook_is_counted_not_retried_and_syncing_goes_on(tmp_path: Path,
                                                                  trees: tuple[Path, Path]) -> None:
    source, destination = trees
    runs = tmp_path / "hook-runs"
    hook = f"on_sync = sh -c 'echo run >> {runs}; echo purge failed >&2; exit 3'"
    with named_daemon(tmp_path, source, destination, hook).start() as daemon:
        for index in range(3):
            write_file(source / f"f{index}", f"{index}\n")
            wait_until_equal(source, destination, 10)
            daemon.wait_synced()
        daemon.wait_log("on_sync hook failed (exit status 3); it is not retried")
        daemon.wait_log("on_sync: purge failed")
        syncs = sum(" sent in " in line for line in daemon.log().splitlines())
        wait_for(lambda: daemon.status()["hooks"]["on_sync"].get("failed", 0) == len(runs.read_text().split()), 10,
                 lambda: f"{daemon.status()['hooks']} {runs.read_text()}")
        assert 2 <= len(runs.read_text().split()) <= syncs, "never retried: at most one call per sync"
        assert daemon.status()["state"] == "in-sync"


def test_on_failure_is_told_once_when_failing_and_once_when_recovered(tmp_path: Path,
                                                                     trees: tuple[Path, Path]) -> None:
    source, destination = trees
    command, out = recorder(tmp_path, "on-failure")
    broken = tmp_path / "destination-down"
    daemon = named_daemon(tmp_path, source, destination, f"on_failure = {command}", "--rsync-binary", str(FAKE_RSYNC),
                          env={"FAKE_RSYNC_DOWN": str(broken)})
    with daemon.start():
        broken.touch()
        write_file(source / "while-down", "x\n")
        daemon.wait_state("retrying", 30)
        failing = wait_for(lambda: calls(out), 10, lambda: f"on_failure never ran:\n{daemon.log()}")[0]["env"]
        assert failing["PIRSYNCD_HOOK"] == "on_failure" and failing["PIRSYNCD_EVENT"] == "failing"
        assert failing["PIRSYNCD_INSTANCE"] == "www" and failing["PIRSYNCD_DESTINATION"] == "destination"
        assert "socket I/O" in failing["PIRSYNCD_ERROR"], failing
        daemon.wait_log("failed after", 10)
        wait_for(lambda: daemon.log().count("failed after") >= 2, 20, "no second failed run")  # retried, not told again
        assert len(calls(out)) == 1
        broken.unlink()
        wait_until_equal(source, destination, 30)
        recovered = wait_for(lambda: calls(out)[1:], 10, lambda: f"recovery never told:\n{daemon.log()}")[0]["env"]
        assert recovered["PIRSYNCD_EVENT"] == "recovered" and recovered["PIRSYNCD_ERROR"] == ""
        daemon.wait_synced()
        assert len(calls(out)) == 2

        source.rename(tmp_path / "source-away")
        lost = wait_for(lambda: calls(out)[2:], 15, lambda: f"source-lost never told:\n{daemon.log()}")[0]["env"]
        assert lost["PIRSYNCD_EVENT"] == "source-lost" and lost["PIRSYNCD_ERROR"]
        (tmp_path / "source-away").rename(source)
        back = wait_for(lambda: calls(out)[3:], 30, lambda: f"source back never told:\n{daemon.log()}")[0]["env"]
        assert back["PIRSYNCD_EVENT"] == "recovered"
        wait_for(lambda: daemon.status()["hooks"]["on_failure"] == {"ok": 4}, 10, lambda: str(daemon.status()))
