"""W7 fan-out (issue 13): one watched tree to 4 local destinations.

    .venv/bin/python bench/fanout.py [--quick] [--root /dev/shm] [--json out.json]

Burst: the W2 burst (DIRS x 10 files x 4 KiB) into a source mirrored by one pirsyncd instance with
4 destinations, then by lsyncd with 4 ``sync{}`` blocks on the same source, in the same run: seconds
until all four are identical to the source, rsync runs, inotify watches of the daemon (``inotify
wd:`` lines in /proc/PID/fdinfo) against the number of source directories, peak RSS.
Dead destination: W1-style latency (one 4 KiB file, delay 0, median of PROBES) at a good
destination with a second destination that is down (ssh to a closed loopback port), against the
same with the good destination alone (pirsyncd only: lsyncd has no per-target isolation to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import measure
from bench.daemons import LSYNCD, REPO_ROOT, RunningDaemon, Setup, format_seconds, lua_string, pirsyncd_command
from bench.workloads import unique_block, write_file
from tests.support.processes import inotify_watches
from tests.support.trees import wait_for

DESTINATIONS = 4
WRAPPER = os.path.join(REPO_ROOT, "bench", "rsync-wrapper")


def directory_count(root: str) -> int:
    return sum(1 for _ in os.walk(root))


def make_setup(run_dir: str, destinations: list[str]) -> Setup:
    source = os.path.join(run_dir, "source")
    os.makedirs(source)
    for destination in destinations:
        if destination.startswith("/"):
            os.makedirs(destination)
    wrapper = os.path.join(run_dir, "rsync-wrapper")
    shutil.copy(WRAPPER, wrapper)
    return Setup(run_dir, source, destinations[0], wrapper, wrapper + ".log",
                 os.path.join(run_dir, "status.json"), 0.0)


def start(name: str, setup: Setup, destinations: list[str], extra: tuple[str, ...] = ()) -> RunningDaemon:
    if name == "pirsyncd":
        argv = pirsyncd_command(setup)
        for destination in destinations[1:]:
            argv += ["--destination", destination]
        return RunningDaemon(name, setup, argv + list(extra))
    blocks = [f"sync {{ default.rsync, source = {lua_string(setup.source + '/')}, "
              f"target = {lua_string(destination + '/')}, delay = {format_seconds(setup.delay)}, "
              f"rsync = {{ binary = {lua_string(setup.wrapper)} }} }}" for destination in destinations]
    config = os.path.join(setup.run_dir, "lsyncd.lua")
    with open(config, "w", encoding="utf-8") as config_file:
        config_file.write("settings {\n    logfile = " + lua_string(os.path.join(setup.run_dir, "lsyncd.log"))
                          + ",\n}\n" + "\n".join(blocks) + "\n")
    return RunningDaemon(name, setup, [LSYNCD, "-nodaemon", config])


def wait_initial(daemon: RunningDaemon, count: int, timeout: float) -> None:
    """pirsyncd: in-sync in its status file; lsyncd: one successful startup rsync per target."""
    if daemon.name == "pirsyncd":
        daemon.wait_ready(timeout)
        return

    def done() -> bool:
        daemon.check_alive()
        return len([run for run in measure.read_rsync_log(daemon.setup.rsync_log).finished if run.status == 0]) >= count

    wait_for(done, timeout, lambda: f"lsyncd startup syncs:\n{daemon.output_tail()}", poll=0.01)


def burst(name: str, root: str, dirs: int, timeout: float) -> dict[str, float]:
    run_dir = tempfile.mkdtemp(prefix=f"w7-{name}-", dir=root)
    try:
        destinations = [os.path.join(run_dir, f"web{number}") for number in range(1, DESTINATIONS + 1)]
        setup = make_setup(run_dir, destinations)
        daemon = start(name, setup, destinations)
        try:
            wait_initial(daemon, DESTINATIONS, timeout)
            runs_before = len(measure.read_rsync_log(setup.rsync_log).finished)
            noise = os.urandom(4096)
            started = time.time()
            for number in range(dirs):
                directory = os.path.join(setup.source, f"burst{number:04d}")
                os.mkdir(directory)
                for file_number in range(10):
                    write_file(os.path.join(directory, f"f{file_number}"),
                               unique_block(number * 10 + file_number, 4096, noise))

            def converged() -> float | None:
                daemon.check_alive()
                if all(measure.trees_identical(setup.source, destination) for destination in destinations):
                    return time.time()
                return None

            converged_at = wait_for(converged, timeout, f"{name}: 4 destinations not identical", poll=0.05)
            wait_for(lambda: not measure.read_rsync_log(setup.rsync_log).running_pids, timeout, "runs going")
            return {"converge_s": converged_at - started,
                    "rsync_runs": len(measure.read_rsync_log(setup.rsync_log).finished) - runs_before,
                    "inotify_watches": inotify_watches(daemon.pid),
                    "source_dirs": directory_count(setup.source),
                    "peak_rss_mib": measure.peak_rss_mib(daemon.pid)}
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def latency(root: str, dead: bool, probes: int, timeout: float) -> float:
    """Median ms for one 4 KiB file to reach the good destination (pirsyncd, delay 0)."""
    run_dir = tempfile.mkdtemp(prefix="w7-latency-", dir=root)
    try:
        good = os.path.join(run_dir, "good")
        destinations = [good] + ([f"root@127.0.0.1:{run_dir}/dead"] if dead else [])
        setup = make_setup(run_dir, destinations)
        extra: tuple[str, ...] = ("--ssh-port", str(closed_port())) if dead else ()
        daemon = start("pirsyncd", setup, destinations, extra)
        try:
            if dead:
                wait_for(lambda: any(entry.get("name") == "good" and entry.get("state") == "in-sync"
                                     for entry in measure_status(setup)), timeout, "good not in sync", poll=0.01)
            else:
                daemon.wait_ready(timeout)
            samples = []
            for index in range(probes):
                samples.append(daemon.probe(f"probe-{index}", timeout) * 1000)
                time.sleep(0.2)  # the W1 pace: one file every 200 ms
            return measure.median(samples)
        finally:
            daemon.stop()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def measure_status(setup: Setup) -> list[dict]:
    from tests.support.daemon import read_status_file
    return list(read_status_file(setup.status_file).get("destinations") or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 dirs, 10 probes (seconds)")
    parser.add_argument("--root", default="/dev/shm")
    parser.add_argument("--daemons", default="pirsyncd,lsyncd")
    parser.add_argument("--json")
    arguments = parser.parse_args(argv)
    dirs, probes, timeout = (100, 10, 60.0) if arguments.quick else (1000, 50, 300.0)
    results: dict[str, dict[str, float]] = {}
    for name in arguments.daemons.split(","):
        if name == "lsyncd" and not os.path.exists(LSYNCD):
            continue
        results[f"W7 burst {name}"] = burst(name, arguments.root, dirs, timeout)
    results["W7 latency pirsyncd"] = {"alone_p50_ms": latency(arguments.root, False, probes, timeout),
                                      "dead_p50_ms": latency(arguments.root, True, probes, timeout)}
    latency_row = results["W7 latency pirsyncd"]
    latency_row["dead_x_alone"] = latency_row["dead_p50_ms"] / latency_row["alone_p50_ms"]
    for row, figures in results.items():
        print(f"{row:24} " + "  ".join(f"{key}={value:.4g}" for key, value in figures.items()))
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as output:
            json.dump(results, output, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
