"""pirsyncd against lsyncd 2.2.3, side by side, in one run (issue 8).

    .venv/bin/python bench/run.py [--quick] [--workloads W1,W2,W3,W4,W5] [--ssh] [--root /dev/shm]
                                  [--repeat N] [--json out.json] [--results-md bench/RESULTS.md]

For every repetition and workload it runs pirsyncd, then lsyncd (A B A B ...), each on fresh trees
under --root, then one plain ``rsync -a`` of the same final tree (the floor), and prints medians
with the ratio pirsyncd/lsyncd. Exit status: 0 when every run completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import measure, workloads
from bench.daemons import DAEMON_NAMES, REPO_ROOT, SshTarget, pirsyncd_available
from bench.sshd import LoopbackSshd

WORKLOAD_NAMES = ("W1", "W2", "W3", "W4", "W5", "W1ssh", "W4ssh", "W3large")
DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W4", "W5")
FIGURES_WITH_FLOOR = ("converge_s", "ready_s", "synced_s", "plain_p50_ms", "renamed_p50_ms")
DESCRIPTIONS = {
    "W1": "latency, delay 0: one 4 KiB file every 200 ms, 50 files (plain, then written-then-renamed)",
    "W2": "burst: 1,000 dirs x 10 files x 4 KiB as fast as possible",
    "W3": "startup: 20,000 dirs and 100,000 files, empty destination",
    "W3large": "startup: 100,000 dirs and 1,000,000 files, empty destination",
    "W4": "rename: a mirrored 200 MiB directory of 200 files is renamed",
    "W5": "idle: 10 s without changes",
    "W1ssh": "W1 over ssh to a loopback sshd (lsyncd: default.rsyncssh)",
    "W4ssh": "W4 over ssh to a loopback sshd (lsyncd: default.rsyncssh)",
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny workloads, seconds in total (CI smoke)")
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                        help=f"comma-separated, from {', '.join(WORKLOAD_NAMES)} (default: %(default)s)")
    parser.add_argument("--ssh", action="store_true", help="also run W1ssh and W4ssh (a loopback sshd)")
    parser.add_argument("--daemons", default=",".join(DAEMON_NAMES), help="default: %(default)s")
    parser.add_argument("--root", default="/dev/shm", help="where trees are made (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each workload (default: 3)")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="the daemons' delay for W2, W4 and W5 (W1 always uses 0; default: %(default)s)")
    parser.add_argument("--json", help="write every figure of every run here")
    parser.add_argument("--results-md", help="write the table, machine and command as Markdown here")
    parser.add_argument("--keep", action="store_true", help="keep run directories (logs, trees)")
    arguments = parser.parse_args(argv)
    arguments.workloads = [name.strip() for name in arguments.workloads.split(",") if name.strip()]
    if arguments.ssh:
        arguments.workloads += [name + "ssh" for name in ("W1", "W4") if name in arguments.workloads]
    arguments.daemons = [name.strip() for name in arguments.daemons.split(",") if name.strip()]
    unknown = [name for name in arguments.workloads if name not in WORKLOAD_NAMES]
    unknown += [name for name in arguments.daemons if name not in DAEMON_NAMES]
    if unknown:
        parser.error(f"unknown workload or daemon: {', '.join(unknown)}")
    return arguments


def run_one(workload: str, daemon: str, arguments: argparse.Namespace, ssh: SshTarget | None
            ) -> tuple[dict[str, float], dict[str, float]]:
    """Run one workload on one daemon; return (figures, floor figures)."""
    scale = workloads.QUICK if arguments.quick else workloads.FULL
    if workload == "W3large":
        scale = workloads.LARGE
    base = workload.removesuffix("ssh")
    populate: Callable[[str], None] | None = {
        "W3": workloads.w3_populate(scale), "W3large": workloads.w3_populate(scale),
        "W4": workloads.w4_populate(scale), "W5": workloads.w5_populate}.get(base)
    delay = 0.0 if base == "W1" else arguments.delay
    use_ssh = ssh if workload.endswith("ssh") else None
    with workloads.daemon_session(daemon, arguments.root, workload, delay, scale.timeout, populate,
                                  use_ssh, arguments.keep) as session:
        if base == "W1":
            return workloads.w1_latency(session, scale), workloads.floor_one_file(arguments.root, use_ssh)
        if base == "W2":
            figures = workloads.w2_burst(session, scale)
        elif base in ("W3", "W3large"):
            figures = workloads.w3_startup(session, scale)
        elif base == "W4":
            figures = workloads.w4_rename(session, scale)
        else:
            return workloads.w5_idle(session, scale), {}
        # The daemon is stopped and its mirror removed first: W3large needs the inodes (a tmpfs has
        # about 3 million by default, and three copies of 1.1 million entries do not fit).
        session.daemon.stop()
        shutil.rmtree(session.setup.destination_path)
        return figures, workloads.floor_copy(session.setup.source, arguments.root, use_ssh)


def pirsyncd_code_digest() -> str:
    """A short digest of pirsyncd/*.py, to tell which engine a run measured (it may change between
    runs while the engine is being written, and there may be no commit to name)."""
    digest = hashlib.sha256()
    package = os.path.join(REPO_ROOT, "pirsyncd")
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            digest.update(name.encode() + b"\0")
            with open(os.path.join(package, name), "rb") as module:
                digest.update(module.read())
    return digest.hexdigest()[:12]


def run_all(arguments: argparse.Namespace, ssh: SshTarget | None) -> tuple[dict, list[str]]:
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    failures: list[str] = []
    arguments.pirsyncd_digests = []
    arguments.pirsyncd_code_by_run = []
    for repetition in range(arguments.repeat):
        for workload in arguments.workloads:
            for daemon in arguments.daemons:
                label = f"{workload} {daemon} #{repetition + 1}"
                print(f"-- {label} ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                if daemon == "pirsyncd":
                    digest = pirsyncd_code_digest()
                    if digest not in arguments.pirsyncd_digests:
                        arguments.pirsyncd_digests.append(digest)
                    arguments.pirsyncd_code_by_run.append(f"{label}: {digest}")
                try:
                    figures, floor = run_one(workload, daemon, arguments, ssh)
                except Exception:  # a failed run is reported and the benchmark goes on
                    failures.append(f"{label}: {traceback.format_exc().strip().splitlines()[-1]}")
                    traceback.print_exc()
                    continue
                print(f"   {label}: {format_figures(figures)} floor {format_figures(floor)} "
                      f"({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
                results.setdefault(workload, {}).setdefault(daemon, []).append(figures)
                if floor:
                    results[workload].setdefault("floor", []).append(floor)
    return results, failures


def format_figures(figures: dict[str, float]) -> str:
    return " ".join(f"{key}={value:.4g}" for key, value in figures.items())


def summarize(results: dict) -> list[dict]:
    """One row per workload figure: medians per daemon, ratio pirsyncd/lsyncd, multiples of the floor."""
    rows = []
    for workload, by_daemon in results.items():
        floor_runs = by_daemon.get("floor", [])
        floor_value = measure.median([run[next(iter(run))] for run in floor_runs]) if floor_runs else None
        figure_names: list[str] = []
        for daemon in DAEMON_NAMES:
            for run in by_daemon.get(daemon, []):
                figure_names += [name for name in run if name not in figure_names]
        for figure in figure_names:
            medians = {daemon: measure.median([run[figure] for run in by_daemon.get(daemon, [])
                                               if figure in run])
                       for daemon in DAEMON_NAMES}
            row: dict = {"workload": workload, "figure": figure, **medians,
                         "runs": {daemon: len(by_daemon.get(daemon, [])) for daemon in DAEMON_NAMES}}
            pirsyncd, lsyncd = medians["pirsyncd"], medians["lsyncd"]
            row["ratio"] = pirsyncd / lsyncd if lsyncd and lsyncd == lsyncd and pirsyncd == pirsyncd else None
            if floor_value and figure in FIGURES_WITH_FLOOR:
                row["floor"] = floor_value
            rows.append(row)
        for extra_floor in list(dict.fromkeys(key for run in floor_runs for key in run))[1:]:
            rows.append({"workload": workload, "figure": extra_floor, "pirsyncd": None, "lsyncd": None,
                         "ratio": None, "floor": measure.median([run[extra_floor] for run in floor_runs
                                                                 if extra_floor in run])})
    return rows


def format_number(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def table_lines(rows: list[dict], markdown: bool) -> list[str]:
    header = ["workload", "figure", "pirsyncd", "lsyncd", "pirsyncd/lsyncd", "floor", "pirsyncd/floor",
              "lsyncd/floor"]
    body = []
    for row in rows:
        floor = row.get("floor")
        body.append([row["workload"], row["figure"], format_number(row["pirsyncd"]),
                     format_number(row["lsyncd"]), format_number(row["ratio"]), format_number(floor),
                     format_number(row["pirsyncd"] / floor if floor and row["pirsyncd"] else None),
                     format_number(row["lsyncd"] / floor if floor and row["lsyncd"] else None)])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return lines + ["| " + " | ".join(cells) + " |" for cells in body]
    widths = [max(len(cells[column]) for cells in [header, *body]) for column in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
            for cells in [header, *body]]


def machine_description() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            return ((result.stdout or result.stderr).strip().splitlines() or ["?"])[0]
        except OSError as error:
            return str(error)
    return {"nproc": str(os.cpu_count()), "kernel": platform.release(),
            "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="ascii")
                         if line.startswith("model name")), "?"),
            "rsync": first_line(["/usr/bin/rsync", "--version"]),
            "lsyncd": first_line(["/usr/bin/lsyncd", "-version"]),
            "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
            "pirsyncd commit": first_line(["git", "-C", REPO_ROOT, "log", "-1", "--format=%h %s"]
                                          ).replace("fatal: ", "none: ")}


def write_markdown(path: str, rows: list[dict], machine: dict[str, str], command: str,
                   arguments: argparse.Namespace, failures: list[str]) -> None:
    lines = ["# Benchmark results: pirsyncd against lsyncd 2.2.3", "",
             f"Command: `{command}` (trees under {arguments.root}, {arguments.repeat} repetitions, medians).",
             f"Run: {time.strftime('%Y-%m-%d %H:%M %Z')}", "", "Machine:", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    digests = getattr(arguments, "pirsyncd_digests", [])
    lines.append(f"- pirsyncd code (sha256 of pirsyncd/*.py, first 12): {', '.join(digests) or '-'}"
                 + (" — the engine changed during the run; runs mix versions" if len(digests) > 1 else ""))
    lines += ["", "Workloads:", ""]
    lines += [f"- {name}: {DESCRIPTIONS[name]}" for name in arguments.workloads]
    lines += ["", *table_lines(rows, markdown=True), ""]
    if failures:
        lines += ["Failed runs:", "", *[f"- {failure}" for failure in failures], ""]
    with open(path, "w", encoding="utf-8") as markdown_file:
        markdown_file.write("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if "pirsyncd" in arguments.daemons:
        problem = pirsyncd_available()
        if problem:
            print(f"run.py: pirsyncd does not start ({problem}); run with --daemons lsyncd to measure "
                  "lsyncd alone", file=sys.stderr)
            return 2
    command = shlex.join([os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd())
                          else sys.executable, *sys.argv])
    ssh_workloads = [name for name in arguments.workloads if name.endswith("ssh")]
    with tempfile.TemporaryDirectory(prefix="pirsyncd-bench-sshd-", dir=arguments.root) as sshd_dir:
        if ssh_workloads:
            with LoopbackSshd(sshd_dir) as ssh:
                results, failures = run_all(arguments, ssh)
        else:
            results, failures = run_all(arguments, None)
    rows = summarize(results)
    machine = machine_description()
    print("\n".join(table_lines(rows, markdown=False)))
    for failure in failures:
        print(f"FAILED {failure}")
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as json_file:
            json.dump({"command": command, "machine": machine, "arguments": vars(arguments),
                       "results": results, "summary": rows, "failures": failures}, json_file, indent=1)
    if arguments.results_md:
        write_markdown(arguments.results_md, rows, machine, command, arguments, failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
