"""``pirsyncd audit`` against real rsync on both deletion paths: each kind of drift made at the
destination is found and named (a same-size rewrite with its old mtime only by ``--content``),
``--repair`` leaves the destination equal to the source, and an in-sync mirror under live churn
with a running daemon reports nothing. The daemon's periodic audits in content slices
(``audit_content_slices``) check one slice in turn, find a same-size rewrite within N audits, and
neither block the loop nor hold up the sync.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pirsyncd.ops.drift import in_slice
from tests.support.daemon import REPO, Daemon, pirsyncd_command, run_pirsyncd
from tests.support.rsyncs import current
from tests.support.trees import differences, wait_until_equal, write_file
from tests.support.workload import HOSTILE_NAMES, Workload, seed_from_environment

EX_CONFIG, EX_NOINPUT = 78, 66


def audit(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``pirsyncd audit ARGUMENTS`` with the current deletion path's rsync first in PATH."""
    path = current()
    environment = path.environment(os.environ) if path is not None else dict(os.environ)
    return run_pirsyncd("audit", *arguments, env=environment, timeout=300)


def audit_json(*arguments: str, expect: int | None) -> dict[str, Any]:
    """The audit's JSON answer; its exit status must be ``expect`` (None: 0 or 1)."""
    result = audit(*arguments, "--json")
    assert result.returncode in ((0, 1) if expect is None else (expect,)), (
        f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def drift_of(answer: dict[str, Any], index: int = 0) -> dict[str, set[str]]:
    return {kind: set(paths) for kind, paths in answer["destinations"][index]["drift"].items()}


def make_tree(source: Path) -> None:
    """A tree with every hostile name, nested directories, a symlink and files to drift."""
    for index, name in enumerate(HOSTILE_NAMES):
        write_file(source / "names" / name, f"hostile {index}\n")
    write_file(source / "deep" / "er" / "f", "deep\n")
    for name in ("grown.txt", "same.txt", "mode.txt", "gone.txt"):
        write_file(source / name, f"{name} holds twenty\n")
    os.symlink("mode.txt", source / "link")


def mirror(source: Path, destination: Path) -> None:
    subprocess.run(["rsync", "-a", "--delete", f"{source}/", f"{destination}/"], check=True)


def rewrite_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    data = path.read_bytes()
    path.write_bytes(data[:-2] + b"X\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def make_drift(destination: Path) -> None:
    """One of each kind, at the destination only."""
    (destination / "names" / "-e sh").unlink()  # missing
    (destination / "gone.txt").unlink()  # missing
    for path in sorted((destination / "deep").rglob("*"), reverse=True):  # a missing tree
        path.unlink() if path.is_file() else path.rmdir()
    (destination / "deep").rmdir()
    write_file(destination / "names" / "extra\nline", "not in the source\n")  # extra
    write_file(destination / "stray" / "dir" / "file", "not in the source\n")  # an extra tree
    with open(destination / "grown.txt", "a") as stream:  # modified: size
        stream.write("more\n")
    os.chmod(destination / "mode.txt", 0o600)  # attributes: mode
    os.unlink(destination / "link")
    os.symlink("grown.txt", destination / "link")  # attributes: symlink target
    rewrite_keeping_size_and_mtime(destination / "same.txt")  # found by --content only


EXPECTED = {
    "missing": {"names/-e sh", "gone.txt", "deep", "deep/er", "deep/er/f"},
    "extra": {"names/extra\nline", "stray", "stray/dir", "stray/dir/file"},
    "modified": {"grown.txt"},
    "attributes": {"mode.txt", "link"},
}
# Creating and deleting entries at the destination changed these directories' mtimes: drift too.
DIRECTORIES_TOUCHED = {".", "names"}


def assert_found(found: dict[str, set[str]], expected: dict[str, set[str]]) -> None:
    for kind in ("missing", "extra", "modified"):
        assert found[kind] == expected[kind], f"{kind}: {found[kind]} != {expected[kind]}"
    assert expected["attributes"] <= found["attributes"] <= expected["attributes"] | DIRECTORIES_TOUCHED


def test_each_kind_of_drift_is_found_and_named_and_repaired(tmp_path: Path) -> None:
    source, destination = tmp_path / "source", tmp_path / "mirror"
    make_tree(source)
    mirror(source, destination)
    place = ["--source", str(source), "--destination", str(destination)]
    answer = audit_json(*place, "--content", expect=0)
    assert answer["identical"] and drift_of(answer) == {kind: set() for kind in EXPECTED}

    make_drift(destination)
    found = drift_of(audit_json(*place, expect=1))
    assert_found(found, EXPECTED)
    assert "same.txt" not in set().union(*found.values())  # same size and mtime: metadata cannot tell
    with_content = drift_of(audit_json(*place, "--content", expect=1))
    assert_found(with_content, {**EXPECTED, "modified": {"grown.txt", "same.txt"}})

    person = audit(*place)
    assert person.returncode == 1
    assert person.stdout.splitlines()[0].startswith(f"mirror: {sum(map(len, found.values()))} differences (5 missing")
    assert "  extra:" in person.stdout and "'names/extra\\nline'" in person.stdout

    repaired = audit(*place, "--content", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert differences(source, destination) == []
    assert (destination / "same.txt").read_bytes() == (source / "same.txt").read_bytes()
    assert os.readlink(destination / "link") == "mode.txt"
    assert audit_json(*place, "--content", expect=0)["identical"]


def test_a_repair_deletes_nothing_past_max_delete(tmp_path: Path) -> None:
    source, destination = tmp_path / "source", tmp_path / "mirror"
    make_tree(source)
    mirror(source, destination)
    make_drift(destination)
    place = ["--source", str(source), "--destination", str(destination), "--max-delete", "2"]
    result = audit(*place, "--repair")
    assert result.returncode == 1
    assert "more than max_delete = 2: none deleted" in result.stderr
    found = drift_of(audit_json(*place, expect=1))
    assert found["extra"] == EXPECTED["extra"] and not found["missing"] and not found["modified"]


def test_content_slices_cover_the_tree_once(tmp_path: Path) -> None:
    source, destination = tmp_path / "source", tmp_path / "mirror"
    make_tree(source)
    mirror(source, destination)
    rewrite_keeping_size_and_mtime(destination / "same.txt")
    rewrite_keeping_size_and_mtime(destination / "names" / "café")
    place = ["--source", str(source), "--destination", str(destination)]
    parts = 3
    seen: dict[str, int] = {}
    for part in range(1, parts + 1):
        answer = audit_json(*place, f"--content={part}/{parts}", expect=None)
        for path in drift_of(answer)["modified"]:
            seen[path] = part
    assert seen == {path: next(part for part in range(1, parts + 1) if in_slice(path, part, parts))
                    for path in ("same.txt", "names/café")}
    assert audit("--source", str(source), "--destination", str(destination), "--content=4/3").returncode == EX_CONFIG


def test_errors_are_one_line_with_a_distinct_status(tmp_path: Path) -> None:
    source, destination = tmp_path / "source", tmp_path / "mirror"
    make_tree(source)
    mirror(source, destination)
    missing = audit("--source", str(tmp_path / "nowhere"), "--destination", str(destination))
    assert missing.returncode == EX_NOINPUT and len(missing.stderr.splitlines()) == 1, missing.stderr
    config = tmp_path / "www.conf"
    config.write_text(f"[sync]\nsource = {source}\ndestination = {destination}\n")
    unknown = audit("--config", str(config), "--destination", "elsewhere")
    assert unknown.returncode == EX_CONFIG and "no destination 'elsewhere' (known: mirror)" in unknown.stderr
    assert audit("--config", str(config), "--destination", "mirror").returncode == 0
    nothing = audit()
    assert nothing.returncode == EX_CONFIG and "nothing to audit" in nothing.stderr
    for wrong, says in ((["--content=x"], "give K/N"),
                        (["--destination", "a", "--destination", "b"], "one destination")):
        result = audit("--config", str(config), *wrong)
        assert result.returncode == EX_CONFIG and says in result.stderr and len(result.stderr.splitlines()) == 1


def test_an_in_sync_mirror_under_live_churn_reports_nothing_but_drift_made_at_the_destination(
        tmp_path: Path) -> None:
    source, destination, outside = tmp_path / "source", tmp_path / "mirror", tmp_path / "outside"
    for directory in (source / "busy", source / "quiet", outside):
        directory.mkdir(parents=True)
    for index in range(20):
        write_file(source / "quiet" / f"file{index}", f"quiet {index}\n")
    config = tmp_path / "www.conf"
    config.write_text(f"[sync]\nsource = {source}\ndestination = {destination}\ndelay = 0.3\n")
    workload = Workload(source / "busy", seed_from_environment(2525), "hostile", outside, hard_links=False)
    with Daemon(tmp_path / "daemon", "--config", str(config)) as daemon:
        attached = ["--status-file", str(daemon.status_file)]
        for _ in range(3):
            workload.run(60)  # changes on their way while the audit starts
            path = current()
            running = subprocess.Popen(
                pirsyncd_command("audit", *attached), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=path.environment(os.environ) if path is not None else None)
            try:
                stdout = stderr = ""
                while True:  # churn at about 40 operations a second until the audit is done
                    try:
                        stdout, stderr = running.communicate(timeout=0.05)
                        break
                    except subprocess.TimeoutExpired:
                        workload.run(2)
            finally:
                if running.poll() is None:
                    running.kill()
                    running.wait()
            assert running.returncode == 0, f"{workload.describe()}\n{stdout}\n{stderr}\n{daemon.describe()}"
            assert "identical" in stdout
        # Drift made at the destination while the churn goes on: found, and only that.
        os.chmod(destination / "quiet" / "file3", 0o600)
        rewrite_keeping_size_and_mtime(destination / "quiet" / "file4")
        (destination / "quiet" / "file5").unlink()
        write_file(destination / "quiet" / "stray", "made at the destination\n")
        workload.run(60)
        answer = audit_json(*attached, "--content", expect=1)
        found = drift_of(answer)
        assert found == {"attributes": {"quiet/file3", "quiet"}, "modified": {"quiet/file4"},
                         "missing": {"quiet/file5"}, "extra": {"quiet/stray"}}, f"{workload.describe()}\n{found}"
        workload.run(30)
        result = audit(*attached, "--content", "--repair")
        assert result.returncode == 0, result.stdout + result.stderr
        daemon.assert_in_sync(source, destination)
    assert differences(source, destination) == []


@pytest.mark.parametrize("status_only", [False, True], ids=["name", "status-file"])
def test_an_instance_is_audited_by_name_or_by_its_status_file(tmp_path: Path, status_only: bool) -> None:
    source, destination = tmp_path / "source", tmp_path / "mirror"
    make_tree(source)
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    status_file = tmp_path / "daemon" / "status.json"
    (config_dir / "www.conf").write_text(f"[sync]\nsource = {source}\ndestination = {destination}\ndelay = 0.1\n"
                                         f"status_file = {status_file}\n")
    with Daemon(tmp_path / "daemon", "--config", str(config_dir / "www.conf"), status_file=status_file):
        (destination / "mode.txt").chmod(0o640)
        named = ["--status-file", str(status_file)] if status_only else ["www", "--config-dir", str(config_dir)]
        assert drift_of(audit_json(*named, expect=1))["attributes"] == {"mode.txt"}
        if status_only:  # paused, changes on their way cannot be told from drift: say so
            assert run_pirsyncd("pause", "--status-file", str(status_file)).returncode == 0
            paused = audit(*named)
            assert paused.returncode == 75 and "the instance is paused" in paused.stderr, paused.stderr
            assert run_pirsyncd("resume", "--status-file", str(status_file)).returncode == 0
        assert audit(*named, "--repair").returncode == 0
        wait_until_equal(source, destination, 30)


@pytest.mark.remote
@pytest.mark.skipif(os.geteuid() != 0, reason="sshd and rsync --daemon as root need root")
@pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server")
def test_ssh_and_rsync_daemon_destinations_are_audited_and_repaired(tmp_path: Path) -> None:
    from tests.integration.test_remote_destinations import rsyncd_section, ssh_section, write_config
    from tests.support.servers import RsyncDaemon, SshServer

    source, local = tmp_path / "source", tmp_path / "local"
    make_tree(source)
    with SshServer() as ssh, RsyncDaemon() as rsyncd:
        mirrors = {"ssh": tmp_path / "ssh-mirror", "rsyncd": rsyncd.module_path / "rsyncd", "local": local}
        config = write_config(tmp_path, source, ssh_section("ssh", ssh, mirrors["ssh"])
                              + rsyncd_section("rsyncd", rsyncd), local)
        with Daemon(tmp_path / "daemon", "--config", str(config)) as daemon:
            for mirror_path in mirrors.values():
                wait_until_equal(source, mirror_path, 60)
            attached = ["--config", str(config), "--status-file", str(daemon.status_file)]
            answer = audit_json(*attached, "--content", expect=0)
            assert [entry["destination"] for entry in answer["destinations"]] == ["local", "ssh", "rsyncd"]
            for name in ("ssh", "rsyncd"):
                make_drift(mirrors[name])
            answer = audit_json(*attached, "--content", expect=1)
            by_name = {entry["destination"]: index for index, entry in enumerate(answer["destinations"])}
            assert drift_of(answer, by_name["local"]) == {kind: set() for kind in EXPECTED}
            for name in ("ssh", "rsyncd"):
                assert_found(drift_of(answer, by_name[name]), {**EXPECTED, "modified": {"grown.txt", "same.txt"}})
            only = audit_json(*attached, "--destination", "ssh", expect=1)
            assert [entry["destination"] for entry in only["destinations"]] == ["ssh"]
            repaired = audit(*attached, "--content", "--repair")
            assert repaired.returncode == 0, repaired.stdout + repaired.stderr
            for name, mirror_path in mirrors.items():
                assert differences(source, mirror_path) == [], name
            assert audit_json(*attached, "--content", expect=0)["identical"]
            ssh.stop()
            down = audit(*attached, "--destination", "ssh")
            assert down.returncode == 69, down.stdout + down.stderr
            assert down.stderr.count("\n") == 1 and "ssh: connect to host" in down.stderr, down.stderr
            assert down.stdout == ""


def periodic_daemon(tmp_path: Path, source: Path, destination: Path, *lines: str) -> tuple[Daemon, Path, Path]:
    """An instance auditing every half second, with a metrics file and an on_failure recorder."""
    from tests.integration.test_hooks import recorder

    hook, out = recorder(tmp_path, "on_failure")
    metrics = tmp_path / "pirsyncd.prom"
    config = tmp_path / "www.conf"
    config.write_text("\n".join([f"[sync]\nsource = {source}\ndestination = {destination}\ndelay = 0.1",
                                 "audit_interval = 0.5", *lines, f"[log]\nmetrics_file = {metrics}",
                                 f"[hooks]\non_failure = {hook}\n"]))
    return Daemon(tmp_path / "daemon", "--config", str(config)), metrics, out


def audited(daemon: Daemon, predicate: Any, timeout: float = 30) -> dict[str, Any]:
    """The status's audit once ``predicate(audit)`` holds."""
    from tests.support.trees import wait_for

    def reached() -> dict[str, Any] | None:
        daemon.assert_running()
        audit = daemon.status().get("audit")
        return audit if isinstance(audit, dict) and audit.get("time") and predicate(audit) else None

    return wait_for(reached, timeout, lambda: f"audit: {daemon.status().get('audit')}\n{daemon.describe()}")


def test_the_daemon_audits_periodically_and_reports_drift_everywhere(tmp_path: Path) -> None:
    from tests.integration.test_hooks import calls
    from tests.integration.test_metrics import read_metrics, total
    from tests.support.trees import wait_for

    source, destination = tmp_path / "source", tmp_path / "mirror"
    make_tree(source)
    daemon, metrics, out = periodic_daemon(tmp_path, source, destination)
    with daemon:
        audited(daemon, lambda audit: audit["drift"] == {"missing": 0, "extra": 0, "modified": 0, "attributes": 0})
        os.chmod(destination / "mode.txt", 0o600)
        write_file(destination / "names" / "stray", "made at the destination\n")
        audit = audited(daemon, lambda audit: (audit["drift"] or {}).get("extra"))
        assert ["mode.txt", "attributes"] in audit["paths"] and ["names/stray", "extra"] in audit["paths"]
        assert audit["drift"]["missing"] == 0 and audit["drift"]["modified"] == 0
        assert "audit found" in daemon.status()["status_line"]
        # The metrics file is written just after the status file: wait for it, not a moment.
        wait_for(lambda: total(read_metrics(metrics), "pirsyncd_audit_drift_entries", kind="extra") == 1, 20,
                 lambda: f"metrics without the drift: {read_metrics(metrics)}")
        assert total(read_metrics(metrics), "pirsyncd_audit_last_timestamp_seconds") > 0
        wait_for(lambda: any(call["env"].get("PIRSYNCD_EVENT") == "drift" for call in calls(out)), 20,
                 lambda: f"no drift event: {calls(out)}")
        assert "audit: 2 differences at the destination" in daemon.log() or "audit: 3 differences" in daemon.log()
        status = run_pirsyncd("status", "--status-file", str(daemon.status_file))
        assert "audit:" in status.stdout and "differences" in status.stdout
        # Put right by hand: the next audit finds nothing, and on_failure hears it recovered.
        os.chmod(destination / "mode.txt", (source / "mode.txt").stat().st_mode & 0o7777)
        os.unlink(destination / "names" / "stray")
        subprocess.run(["rsync", "-a", "--delete", f"{source}/", f"{destination}/"], check=True)
        audited(daemon, lambda audit: not any((audit["drift"] or {}).values()))
        wait_for(lambda: calls(out) and calls(out)[-1]["env"].get("PIRSYNCD_EVENT") == "recovered", 20,
                 lambda: f"no recovered event: {calls(out)}")


def test_audit_repair_sends_the_drift_again_and_churn_raises_no_alarm(tmp_path: Path) -> None:
    from tests.integration.test_hooks import calls
    from tests.support.trees import wait_for

    source, destination, outside = tmp_path / "source", tmp_path / "mirror", tmp_path / "outside"
    make_tree(source)
    outside.mkdir()
    (source / "busy").mkdir()
    daemon, _, out = periodic_daemon(tmp_path, source, destination, "audit_content = yes", "audit_repair = yes")
    with daemon:
        make_drift(destination)
        wait_until_equal(source, destination, 30)
        assert (destination / "same.txt").read_bytes() == (source / "same.txt").read_bytes()
        repaired = audited(daemon, lambda audit: not any((audit["drift"] or {}).values()))
        started = repaired["time"]
        workload = Workload(source / "busy", seed_from_environment(2526), "hostile", outside, hard_links=False)
        ended: set[float] = set()

        def churned_through_audits() -> bool:
            """Two operations each poll (about 40 a second); True once 3 audits ended meanwhile."""
            workload.run(2)
            audit = daemon.status().get("audit") or {}
            assert not any((audit.get("drift") or {}).values()), f"{workload.describe()}\n{audit}"
            if audit.get("time") and audit["time"] > started:
                ended.add(audit["time"])
            return len(ended) >= 3

        wait_for(churned_through_audits, 60, lambda: f"{len(ended)} audits ended under churn\n{daemon.describe()}")
        audited(daemon, lambda audit: not any((audit["drift"] or {}).values()))
        daemon.assert_in_sync(source, destination)
        events = [call["env"].get("PIRSYNCD_EVENT") for call in calls(out)]
        assert events.count("drift") <= 1, events  # the drift made on purpose, once; churn never


def test_each_destination_has_its_own_periodic_audit(tmp_path: Path) -> None:
    from tests.support.trees import wait_for

    source, web1, web2 = tmp_path / "source", tmp_path / "web1", tmp_path / "web2"
    make_tree(source)
    config = tmp_path / "farm.conf"
    config.write_text(f"[sync]\nsource = {source}\ndelay = 0.1\naudit_interval = 0.5\n"
                      f"[destination web1]\ndestination = {web1}\n[destination web2]\ndestination = {web2}\n")
    with Daemon(tmp_path / "daemon", "--config", str(config)) as daemon:
        wait_until_equal(source, web2, 30)
        os.chmod(web2 / "mode.txt", 0o600)

        def audits() -> dict[str, Any] | None:
            daemon.assert_running()
            views = {view["name"]: view.get("audit") or {} for view in daemon.status().get("destinations") or []}
            done = all(view.get("time") and view.get("drift") is not None for view in views.values())
            return views if done and (views["web2"]["drift"] or {}).get("attributes") else None

        views = wait_for(audits, 30, lambda: daemon.describe())
        assert views["web2"]["paths"] == [["mode.txt", "attributes"]]
        assert not any(views["web1"]["drift"].values())
        assert "web2: audit found 1 difference" in daemon.status()["status_line"]


SLICE_LINE = re.compile(r"audit of content slice (\d+)/(\d+): (.*)")


def slice_audits(daemon: Daemon) -> list[tuple[int, str]]:
    """Each periodic audit of a content slice the daemon logged: (K, what it found)."""
    return [(int(match[1]), match[3]) for match in SLICE_LINE.finditer(daemon.log())]


def test_periodic_audits_checksum_one_slice_in_turn_and_find_a_rewrite_within_n_audits(tmp_path: Path) -> None:
    from tests.support.trees import wait_for

    source, destination = tmp_path / "source", tmp_path / "mirror"
    make_tree(source)
    parts = 3
    daemon, _, _ = periodic_daemon(tmp_path, source, destination, f"audit_content_slices = {parts}")
    with daemon:
        # A whole turn over an identical mirror: every slice checked in order, no drift reported.
        wait_for(lambda: len(slice_audits(daemon)) >= parts, 60, daemon.describe)
        before = slice_audits(daemon)
        assert [part for part, _ in before[:parts]] == list(range(1, parts + 1)), before
        assert all(found == "the destination is identical" for _, found in before), before
        assert "differences at the destination" not in daemon.log() and "1 difference" not in daemon.log()

        rewritten = ["same.txt", "names/café"]  # same size, same mtime: only a checksum tells
        for name in rewritten:
            rewrite_keeping_size_and_mtime(destination / name)
        homes = {name: next(part for part in range(1, parts + 1) if in_slice(name, part, parts))
                 for name in rewritten}
        start = len(before)
        # Within N audits (one more: one may have been under way during the rewrite) each is found.

        def enough() -> list[tuple[int, str]] | None:
            audits = slice_audits(daemon)[start:]
            return audits if len(audits) >= parts + 2 else None

        after = wait_for(enough, 60, daemon.describe)
        for part, found in after[1:]:  # the audit under way may have read either version
            for name in rewritten:
                assert (repr(name) in found) == (part == homes[name]), f"{name} (slice {homes[name]}): {after}"
            if part not in homes.values():
                assert found == "the destination is identical", after
        assert [part for part, _ in after] == [(before[-1][0] + index) % parts + 1 for index in range(len(after))]
        audit = audited(daemon, lambda audit: (audit["drift"] or {}).get("modified"))
        assert audit["slice"] in {f"{homes[name]}/{parts}" for name in rewritten}, audit
        assert audit["content"] is True and audit["drift"]["missing"] == 0

        def shown() -> str | None:  # not while an audit runs: then it says "running now"
            text = run_pirsyncd("status", "--status-file", str(daemon.status_file)).stdout
            return text if re.search(rf"audit: +last .*: .*\(content slice [1-{parts}]/{parts}\)", text) else None

        wait_for(shown, 30, daemon.describe)
        assert daemon.status()["state"] == "in-sync"


def test_sliced_periodic_audits_neither_block_the_loop_nor_hold_up_the_sync_under_churn(
        tmp_path: Path, notify_socket: Any) -> None:
    from tests.integration.test_notify import WATCHDOG_USEC, WITH_WATCHDOG_PID, pings_since
    from tests.support.trees import wait_for

    source, destination, outside = tmp_path / "source", tmp_path / "mirror", tmp_path / "outside"
    for index in range(3000):  # a listing of several chunks
        write_file(source / f"dir{index % 30}" / f"file-{index}.txt", f"file {index}\n")
    (source / "busy").mkdir()
    outside.mkdir()
    config = tmp_path / "www.conf"
    config.write_text(f"[sync]\nsource = {source}\ndestination = {destination}\ndelay = 0.1\n"
                      "audit_interval = 0.5\naudit_content_slices = 3\n")
    daemon = Daemon(tmp_path / "daemon", "--config", str(config), env={"WATCHDOG_USEC": str(WATCHDOG_USEC)},
                    prefix=WITH_WATCHDOG_PID, notify=notify_socket)
    workload = Workload(source / "busy", seed_from_environment(2527), "hostile", outside, hard_links=False)
    with daemon:
        pings_from, started = len(notify_socket.messages), time.monotonic()
        start = len(slice_audits(daemon))
        synced: set[float] = set()

        def churned_through_a_turn() -> bool:
            """Two operations a poll; True once 4 slice audits ended meanwhile (a whole turn and one)."""
            workload.run(2)
            notify_socket.receive()  # as systemd does: a full notify socket would hold the daemon up
            status = daemon.status()
            if status.get("last_success"):
                synced.add(status["last_success"])
            return len(slice_audits(daemon)) - start >= 4

        wait_for(churned_through_a_turn, 120, lambda: f"{slice_audits(daemon)[start:]}\n{daemon.describe()}")
        elapsed = time.monotonic() - started
        pings = pings_since(notify_socket, pings_from)
        times = [message.received_at for message in notify_socket.messages[pings_from:] if message.has("WATCHDOG=1")]
        longest = max((later - earlier for earlier, later in itertools.pairwise(times)), default=elapsed)
        daemon.assert_in_sync(source, destination)
        audits = slice_audits(daemon)[start:]
        assert all(found == "the destination is identical" for _, found in audits), f"{workload.describe()}\n{audits}"
        assert {part for part, _ in audits} == {1, 2, 3}
        assert len(synced) >= 4, f"the sync waited for the audits: {len(synced)} syncs in {elapsed:.1f} s"
        # A ping every 0.5 s from the loop itself: a loop blocked by an audit misses them.
        assert pings >= elapsed / 0.5 / 2 - 1 and longest < 3.0, (
            f"{pings} WATCHDOG=1 in {elapsed:.1f} s, {longest:.2f} s the longest gap\n{daemon.describe()}")


@pytest.mark.remote
@pytest.mark.skipif(os.geteuid() != 0, reason="sshd and rsync --daemon as root need root")
@pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server")
def test_periodic_audits_in_slices_find_a_rewrite_at_ssh_and_rsync_daemon_destinations(tmp_path: Path) -> None:
    from tests.integration.test_remote_destinations import rsyncd_section, ssh_section, write_config
    from tests.support.servers import RsyncDaemon, SshServer
    from tests.support.trees import wait_for

    source = tmp_path / "source"
    make_tree(source)
    home = next(part for part in (1, 2) if in_slice("same.txt", part, 2))
    with SshServer() as ssh, RsyncDaemon() as rsyncd:
        mirrors = {"ssh": tmp_path / "ssh-mirror", "rsyncd": rsyncd.module_path / "rsyncd"}
        config = write_config(tmp_path, source, ssh_section("ssh", ssh, mirrors["ssh"])
                              + rsyncd_section("rsyncd", rsyncd), None)
        config.write_text(config.read_text().replace("[sync]\n", "[sync]\naudit_interval = 0.5\n"
                                                                 "audit_content_slices = 2\n", 1))
        with Daemon(tmp_path / "daemon", "--config", str(config)) as daemon:
            for mirror_path in mirrors.values():
                wait_until_equal(source, mirror_path, 60)
                rewrite_keeping_size_and_mtime(mirror_path / "same.txt")

            def found() -> dict[str, Any] | None:
                daemon.assert_running()
                views = {view["name"]: view.get("audit") or {} for view in daemon.status().get("destinations") or []}
                return views if all(["same.txt", "modified"] in (views.get(name) or {}).get("paths", [])
                                    for name in mirrors) else None

            views = wait_for(found, 60, daemon.describe)
            for name in mirrors:
                assert views[name]["slice"] == f"{home}/2" and views[name]["error"] is None, views[name]
                assert views[name]["paths"] == [["same.txt", "modified"]], views[name]
            assert "audit failed" not in daemon.log(), daemon.log()
