"""pirsyncd against lsyncd 2.2.3, side by side, in one run (issue 8).

    .venv/bin/python bench/run.py [--quick] [--workloads W1,W2,W3,W4,W5,W6,W9] [--ssh] [--root /dev/shm]
                                  [--repeat N] [--json out.json] [--results-md bench/RESULTS.md]
                                  [--fixed-rsync PATH] [--deletion-modes parents,missing-args]

For every repetition and workload it runs pirsyncd, then lsyncd (A B A B ...), each on fresh trees
under --root, then one plain ``rsync -a`` of the same final tree (the floor), and prints medians
with the ratio pirsyncd/lsyncd. W6 (deletions) runs pirsyncd twice, once per deletion mode
(``parents`` with the system rsync, ``missing-args`` with the fixed rsync), then lsyncd (A A' B ...);
its floor is a no-op full rsync of the in-sync tree. Exit status: 0 when every run completed, 1
otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import backends, fanout, measure, restart, scratchfs, workloads
from bench.daemons import DAEMON_NAMES, REPO_ROOT, SYSTEM_RSYNC, SshTarget, pirsyncd_available
from bench.sshd import loopback_sshd
from tests.support.daemon import read_status_file

WORKLOAD_NAMES = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W1ssh", "W4ssh", "W3large", "W8", "W8ssh", "W8large",
                  "W9", "W11", "W12")
WATCH_BACKENDS = ("fanotify", "inotify")
# The workloads --watch-backends splits pirsyncd for (one tree, one daemon session); W11 and W12
# always run both backends.
SPLIT_BY_BACKEND = ("W1", "W2", "W3", "W4", "W5", "W3large")
BOTH_BACKENDS = ("W11", "W12")
LARGE_WORKLOADS = ("W3large", "W8large", "W11")
DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W9")
FIGURES_WITH_FLOOR = ("converge_s", "ready_s", "synced_s", "plain_p50_ms", "renamed_p50_ms", "in_sync_s",
                      *(f"{place}_busy_s" for place in workloads.W6_PLACES))
DELETION_MODES = ("parents", "missing-args")
# Where the test setup puts an rsync whose --delete-missing-args works with --files-from (Debian's
# 3.5.0+ds1-0+deb12u1, extracted): W6 runs pirsyncd --deletion-mode missing-args with it.
DEFAULT_FIXED_RSYNC = os.path.join(REPO_ROOT, ".cache", "rsync-fixed", "usr", "bin", "rsync")
DESCRIPTIONS = {
    "W1": "latency, delay 0: one 4 KiB file every 200 ms, 50 files (plain, then written-then-renamed)",
    "W2": "burst: 1,000 dirs x 10 files x 4 KiB as fast as possible",
    "W3": "startup: 20,000 dirs and 100,000 files, empty destination",
    "W3large": "startup: 100,000 dirs and 1,000,000 files, empty destination",
    "W4": "rename: a mirrored 200 MiB directory of 200 files is renamed",
    "W5": "idle: 10 s without changes",
    "W6": "deletion, in the mirrored W3 tree, one at a time: a root file, a file in a top-level dir, a file "
          "10 dirs deep, a top-level dir (1,200 entries), 1,000 files of one dir; busy time until the daemon's "
          "last rsync run ends, against a no-op full rsync (the floor; _x_noop = busy / no-op in the same run). "
          "Rows 'W6 parents': pirsyncd --deletion-mode parents, system rsync; 'W6 missing-args': "
          "--deletion-mode missing-args, the fixed rsync; lsyncd (default.rsync, system rsync) in both",
    "W1ssh": "W1 over ssh to a loopback sshd (lsyncd: default.rsyncssh)",
    "W4ssh": "W4 over ssh to a loopback sshd (lsyncd: default.rsyncssh)",
    "W7": "fan-out (bench/fanout.py): the W2 burst into one source mirrored to 4 local destinations (pirsyncd: one "
          "instance; lsyncd: 4 sync blocks), converge_s until all 4 are identical; pirsyncd also: W1 latency at a "
          "good destination alone and beside a dead one (ssh to a closed port), dead_x_alone",
    "W8": "restart (bench/restart.py): the W3 tree mirrored, SIGTERM, a few hundred changes while down, start "
          "again; in_sync_s from the exec. Rows 'W8 warm': pirsyncd --state-file; 'W8 full': --startup-sync full; "
          "lsyncd in both; floor: a no-op rsync -a --delete of the in-sync tree",
    "W8ssh": "W8 over ssh to a loopback sshd (lsyncd: default.rsyncssh)",
    "W8large": "W8 on the W3large tree (100,000 dirs and 1,000,000 files)",
    "W9": "sustained churn: a writer creates 100-byte files at 100 and at 1,000 a second over 50 dirs for 30 s, "
          "at delay 0 and delay 1 (figures rRATE_dDELAY_*, one daemon run each); per-file lag from the destination "
          "(ctime of the rename into place - the source's mtime kept by rsync): p50, p99, max; rsync runs, the "
          "daemon's CPU time, settle_s from the last write until the mirror is complete",
    "W11": "beyond the inotify watch limit (issue 27): 300,000 dirs (1 file each) on a tmpfs of their own, "
           "fs.inotify.max_user_watches as the run states; pirsyncd --watch-backend fanotify and inotify, lsyncd: "
           "in sync or not, exit status, watches, then a new file in a dir 8 levels down (deep_change_s) and, "
           "for inotify, in a dir it does not watch (unwatched_change_s)",
    "W12": "the fanotify mark's cost for other writers (issue 27): a create/write/close/unlink loop beside the "
           "source on its file system (outside_*) and inside it (inside_*), without and with the daemon; "
           "*_x_none = writer time with / without, the daemon's CPU per 1,000 files meanwhile",
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny workloads, seconds in total (CI smoke)")
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                        help=f"comma-separated, from {', '.join(WORKLOAD_NAMES)} (default: %(default)s)")
    parser.add_argument("--ssh", action="store_true", help="also run W1ssh, W4ssh (W8ssh with W8): a loopback sshd")
    parser.add_argument("--daemons", default=",".join(DAEMON_NAMES), help="default: %(default)s")
    parser.add_argument("--root", default="/dev/shm", help="where trees are made (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each workload (default: 3)")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="the daemons' delay for W2, W4 and W5 (W1 always uses 0; default: %(default)s)")
    parser.add_argument("--json", help="write every figure of every run here")
    parser.add_argument("--results-md", help="write the table, machine and command as Markdown here")
    parser.add_argument("--keep", action="store_true", help="keep run directories (logs, trees)")
    parser.add_argument("--fixed-rsync", default=DEFAULT_FIXED_RSYNC if os.access(DEFAULT_FIXED_RSYNC, os.X_OK)
                        else None, metavar="PATH",
                        help="an rsync whose --delete-missing-args works, for W6's missing-args runs "
                             f"(default: {os.path.relpath(DEFAULT_FIXED_RSYNC, REPO_ROOT)} when it exists; "
                             "without one those runs are skipped)")
    parser.add_argument("--deletion-modes", default=",".join(DELETION_MODES),
                        help="pirsyncd's --deletion-mode values W6 runs (default: %(default)s)")
    parser.add_argument("--watch-backends", default="",
                        help=f"run pirsyncd once per --watch-backend given ({','.join(WATCH_BACKENDS)}) in "
                             f"{', '.join(SPLIT_BY_BACKEND)}, each source on a tmpfs of its own (default: pirsyncd "
                             "as configured, one run; W11 and W12 always run both)")
    parser.add_argument("--source-tmpfs", action="store_true",
                        help="every source on a tmpfs of its own (with --watch-backends: always)")
    parser.add_argument("--large-repeat", type=int, metavar="N",
                        help=f"repetitions of {', '.join(LARGE_WORKLOADS)} (default: --repeat): the first N")
    parser.add_argument("--max-user-watches", type=int, metavar="N",
                        help="set fs.inotify.max_user_watches to N for W11's runs, restored afterwards "
                             "(default: leave it as it is; the run records it)")
    arguments = parser.parse_args(argv)
    arguments.watch_backends = [name.strip() for name in arguments.watch_backends.split(",") if name.strip()]
    if [name for name in arguments.watch_backends if name not in WATCH_BACKENDS]:
        parser.error(f"--watch-backends: from {', '.join(WATCH_BACKENDS)}")
    arguments.deletion_modes = [mode.strip() for mode in arguments.deletion_modes.split(",") if mode.strip()]
    if [mode for mode in arguments.deletion_modes if mode not in DELETION_MODES]:
        parser.error(f"--deletion-modes: from {', '.join(DELETION_MODES)}")
    if arguments.fixed_rsync is not None:
        if not os.access(arguments.fixed_rsync, os.X_OK):
            parser.error(f"--fixed-rsync: not an executable: {arguments.fixed_rsync}")
        arguments.fixed_rsync = os.path.abspath(arguments.fixed_rsync)
    arguments.workloads = [name.strip() for name in arguments.workloads.split(",") if name.strip()]
    if arguments.ssh:
        arguments.workloads += [name + "ssh" for name in ("W1", "W4", "W8") if name in arguments.workloads]
    arguments.daemons = [name.strip() for name in arguments.daemons.split(",") if name.strip()]
    unknown = [name for name in arguments.workloads if name not in WORKLOAD_NAMES]
    unknown += [name for name in arguments.daemons if name not in DAEMON_NAMES]
    if unknown:
        parser.error(f"unknown workload or daemon: {', '.join(unknown)}")
    return arguments


@dataclasses.dataclass(frozen=True)
class Contender:
    """One column of a run: a daemon, the rsync its wrapper runs and (W6) pirsyncd's deletion mode."""

    name: str                        # pirsyncd, lsyncd, or pirsyncd/MODE (W6)
    daemon: str
    real_rsync: str = SYSTEM_RSYNC
    deletion_mode: str | None = None
    startup: str | None = None       # W8's pirsyncd variant: warm or full
    watch_backend: str | None = None  # pirsyncd --watch-backend (issue 27), else as configured

    @property
    def pirsyncd_arguments(self) -> tuple[str, ...]:
        return ((("--deletion-mode", self.deletion_mode) if self.deletion_mode else ())
                + (("--watch-backend", self.watch_backend) if self.watch_backend else ()))

    @property
    def floor_key(self) -> str:
        return "floor" if self.name in DAEMON_NAMES else f"floor {self.name}"


def contenders(workload: str, arguments: argparse.Namespace) -> list[Contender]:
    """The daemons in order; for W6 pirsyncd once per deletion mode (missing-args only with a
    fixed rsync); for W8 pirsyncd warm (when it has --state-file) and full."""
    if workload.startswith("W8"):
        variants = [variant for variant in ("warm", "full") if variant != "warm" or restart.warm_supported()]
        return [*(Contender(f"pirsyncd/{variant}", "pirsyncd", startup=variant) for variant in variants
                  if "pirsyncd" in arguments.daemons),
                *(Contender(daemon, daemon) for daemon in arguments.daemons if daemon != "pirsyncd")]
    backends = WATCH_BACKENDS if workload in BOTH_BACKENDS else \
        arguments.watch_backends if workload in SPLIT_BY_BACKEND else []
    if backends:
        return [*(Contender(f"pirsyncd/{backend}", "pirsyncd", watch_backend=backend) for backend in backends
                  if "pirsyncd" in arguments.daemons),
                *(Contender(daemon, daemon) for daemon in arguments.daemons if daemon != "pirsyncd")]
    if workload != "W6":
        return [Contender(daemon, daemon) for daemon in arguments.daemons]
    chosen = []
    for daemon in arguments.daemons:
        if daemon != "pirsyncd":
            chosen.append(Contender(daemon, daemon))
            continue
        for mode in arguments.deletion_modes:
            if mode == "missing-args" and arguments.fixed_rsync is None:
                continue
            chosen.append(Contender(f"pirsyncd/{mode}", daemon,
                                    arguments.fixed_rsync if mode == "missing-args" else SYSTEM_RSYNC, mode))
    return chosen


def run_one(workload: str, contender: Contender, arguments: argparse.Namespace, ssh: SshTarget | None
            ) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Run one workload on one daemon; return (figures, floor figures, notes)."""
    if workload == "W7":
        dirs, probes, timeout = (100, 10, 60.0) if arguments.quick else (1000, 50, 300.0)
        figures = fanout.burst(contender.daemon, arguments.root, dirs, timeout)
        if contender.daemon == "pirsyncd":
            figures["alone_p50_ms"] = fanout.latency(arguments.root, False, probes, timeout)
            figures["dead_p50_ms"] = fanout.latency(arguments.root, True, probes, timeout)
            figures["dead_x_alone"] = figures["dead_p50_ms"] / figures["alone_p50_ms"]
        return figures, {}, {}
    if workload.startswith("W8"):
        figures, _notes = restart.restart_run(
            contender.startup or "lsyncd", workloads.LARGE if workload == "W8large" else
            workloads.QUICK if arguments.quick else workloads.FULL, arguments.root,
            ssh if workload.endswith("ssh") else None, delay=arguments.delay, keep=arguments.keep,
            counts=restart.QUICK_CHANGES if arguments.quick else restart.FULL_CHANGES, label=workload)
        return figures, {"noop_full_s": figures["noop_full_s"]}, {}
    if workload == "W11":
        return backends.watch_limit(contender.daemon, arguments.root,
                                    backends.LIMIT_QUICK if arguments.quick else backends.LIMIT,
                                    contender.pirsyncd_arguments, arguments.max_user_watches, arguments.keep)
    if workload == "W12":
        return backends.mark_cost(contender.daemon, arguments.root,
                                  backends.MARK_QUICK if arguments.quick else backends.MARK,
                                  contender.pirsyncd_arguments, arguments.keep), {}, {}
    scale = workloads.QUICK if arguments.quick else workloads.FULL
    if workload == "W9":
        return workloads.w9_churn(contender.daemon, arguments.root, scale, arguments.keep), {}, {}
    if workload == "W3large":
        scale = workloads.LARGE
    base = workload.removesuffix("ssh")
    populate: Callable[[str], None] | None = {
        "W3": workloads.w3_populate(scale), "W3large": workloads.w3_populate(scale),
        "W4": workloads.w4_populate(scale), "W5": workloads.w5_populate,
        "W6": workloads.w6_populate(scale)}.get(base)
    delay = 0.0 if base == "W1" else arguments.delay
    use_ssh = ssh if workload.endswith("ssh") else None
    own_source_fs = arguments.source_tmpfs or bool(arguments.watch_backends)
    with workloads.daemon_session(contender.daemon, arguments.root, workload, delay, scale.timeout, populate,
                                  use_ssh, arguments.keep, contender.real_rsync, contender.pirsyncd_arguments,
                                  own_source_fs) as session:
        if base == "W1":
            figures = workloads.w1_latency(session, scale)
            return figures, workloads.floor_one_file(arguments.root, use_ssh), deletion_note(session)
        if base == "W6":
            figures, notes = workloads.w6_deletions(session, scale)
            return figures, {"noop_full_s": figures["noop_full_s"]}, notes
        if base == "W2":
            figures = workloads.w2_burst(session, scale)
        elif base in ("W3", "W3large"):
            figures = workloads.w3_startup(session, scale)
        elif base == "W4":
            figures = workloads.w4_rename(session, scale)
        else:
            return workloads.w5_idle(session, scale), {}, deletion_note(session)
        notes = deletion_note(session)
        # The daemon is stopped and its mirror removed first: W3large needs the inodes (a tmpfs has
        # about 3 million by default, and three copies of 1.1 million entries do not fit).
        session.daemon.stop()
        shutil.rmtree(session.setup.destination_path)
        floor = workloads.floor_copy(session.setup.source, arguments.root, use_ssh)
        if base in ("W3", "W3large"):
            # This run's own ratio: the floor is timed right after it, so load that comes and goes on
            # the machine weighs on both (the table's floor column is the median over all runs).
            figures["ready_x_floor"] = figures["ready_s"] / floor["floor_s"]
            figures["cpu_x_floor"] = (figures["daemon_cpu_s"] + figures["rsync_cpu_s"]) / floor["floor_cpu_s"] \
                if floor["floor_cpu_s"] else float("nan")
        return figures, floor, notes


def deletion_note(session: workloads.Session) -> dict[str, str]:
    """pirsyncd's deletion path (None until its first batch probed the rsync) and watch backend
    from its status file."""
    status = read_status_file(session.setup.status_file) if session.daemon.name == "pirsyncd" else {}
    return {key: str(status[key]) for key in ("deletion_path", "watch_backend") if status.get(key)}


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


_RSYNC_VERSIONS: dict[str, str] = {}


def rsync_version(binary: str) -> str:
    """``rsync  version 3.2.7  protocol version 32`` (the first line of --version), once per binary."""
    if binary not in _RSYNC_VERSIONS:
        _RSYNC_VERSIONS[binary] = first_line([binary, "--version"])
    return _RSYNC_VERSIONS[binary]


def run_notes(workload: str, contender: Contender, label: str, notes: dict[str, str]) -> dict[str, str]:
    """What a run used: the rsync behind the wrapper and, for W6's pirsyncd, the deletion path
    (the status file's ``deletion_path`` when pirsyncd reports it, else the flag given)."""
    info = {"run": label, "workload": workload, "contender": contender.name,
            "rsync_binary": contender.real_rsync, "rsync_version": rsync_version(contender.real_rsync)}
    if contender.deletion_mode:
        info["deletion_mode_flag"] = contender.deletion_mode
        info["deletion_path"] = notes.get("deletion_path", contender.deletion_mode)
        info["deletion_path_from"] = "status file" if "deletion_path" in notes else "--deletion-mode flag"
    elif contender.daemon == "pirsyncd":
        info["deletion_path"] = notes.get("deletion_path", "not recorded (W7, W8 and W9 do not read the status file "
                                                           "for it; pirsyncd's default, auto: the probe decides)")
        info["deletion_path_from"] = "status file" if "deletion_path" in notes else "-"
    elif contender.daemon == "lsyncd":
        info["deletion_path"] = "lsyncd default.rsync: --delete with an include filter list"
        info["deletion_path_from"] = "its default"
    if contender.watch_backend:
        info["watch_backend"] = notes.get("watch_backend", f"{contender.watch_backend} (the flag; not read back)")
    outcome = "; ".join(f"{key}: {notes[key]}" for key in ("state", "warning", "log") if notes.get(key))
    if outcome:
        info["outcome"] = outcome
    return info


def run_all(arguments: argparse.Namespace, ssh: SshTarget | None) -> tuple[dict, list[str]]:
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    failures: list[str] = []
    arguments.pirsyncd_digests = []
    arguments.pirsyncd_code_by_run = []
    arguments.run_notes = []
    for repetition in range(arguments.repeat):
        for workload in arguments.workloads:
            if workload in LARGE_WORKLOADS and repetition >= (arguments.large_repeat or arguments.repeat):
                continue
            for contender in contenders(workload, arguments):
                label = f"{workload} {contender.name} #{repetition + 1}"
                print(f"-- {label} ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                if contender.daemon == "pirsyncd":
                    digest = pirsyncd_code_digest()
                    if digest not in arguments.pirsyncd_digests:
                        arguments.pirsyncd_digests.append(digest)
                    arguments.pirsyncd_code_by_run.append(f"{label}: {digest}")
                try:
                    figures, floor, notes = run_one(workload, contender, arguments, ssh)
                except Exception:  # a failed run is reported and the benchmark goes on
                    failures.append(f"{label}: {traceback.format_exc().strip().splitlines()[-1]}")
                    traceback.print_exc()
                    continue
                print(f"   {label}: {format_figures(figures)} floor {format_figures(floor)} "
                      f"({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
                arguments.run_notes.append(run_notes(workload, contender, label, notes))
                results.setdefault(workload, {}).setdefault(contender.name, []).append(figures)
                if floor:
                    results[workload].setdefault(contender.floor_key, []).append(floor)
    return results, failures


def table_views(results: dict) -> dict[str, dict[str, list[dict[str, float]]]]:
    """The results as the table shows them: a workload with pirsyncd/MODE runs (W6) becomes one
    group per mode, ``W6 MODE``, with those runs as pirsyncd, the same lsyncd runs, and the no-op
    full rsync of that mode's runs (its own rsync binary) as the floor."""
    views: dict[str, dict[str, list[dict[str, float]]]] = {}
    for workload, by_contender in results.items():
        variants = [name for name in by_contender if name.startswith("pirsyncd/")]
        if not variants:
            views[workload] = by_contender
        for variant in variants:
            views[f"{workload} {variant.partition('/')[2]}"] = {
                "pirsyncd": by_contender[variant], "lsyncd": by_contender.get("lsyncd", []),
                "floor": by_contender.get(f"floor {variant}", [])}
    return views


def notes_lines(run_notes: list[dict[str, str]]) -> list[str]:
    """One line per workload and contender: the rsync version(s) and the deletion path(s) its runs
    used; pirsyncd's watch backend (its status file) and, for W11, what each run ended in."""
    by_contender: dict[str, dict[str, list[str]]] = {}
    for info in run_notes:
        entry = by_contender.setdefault(f"{info['workload']} {info['contender']}",
                                        {"rsync": [], "path": [], "watch": [], "outcome": []})
        version = info["rsync_version"]
        if version.startswith("rsync  version "):
            version = version.split()[2]
        rsync = f"{version} ({info['rsync_binary']})"
        path = f"{info.get('deletion_path', '-')} ({info.get('deletion_path_from', '-')})"
        for key, value in (("rsync", rsync), ("path", path), ("watch", info.get("watch_backend")),
                           ("outcome", info.get("outcome"))):
            if value and value not in entry[key]:
                entry[key].append(value)
    return [f"{name}: rsync {'; '.join(entry['rsync'])}; deletions: {'; '.join(entry['path'])}"
            + (f"; watching: {'; '.join(entry['watch'])}" if entry["watch"] else "")
            + (f"; outcome: {' / '.join(entry['outcome'])}" if entry["outcome"] else "")
            for name, entry in by_contender.items()]


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


def markdown_lines(cells: list[list[str]]) -> list[str]:
    """A header row and body rows as a Markdown table."""
    return ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|",
            *("| " + " | ".join(row) + " |" for row in cells[1:])]


def first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return ((result.stdout or result.stderr).strip().splitlines() or ["?"])[0]
    except OSError as error:
        return str(error)


def checkout_commit() -> str:
    """``HASH subject`` of the checkout's HEAD (read when the run starts: a commit made during a
    long run must not be taken for the one measured)."""
    return first_line(["git", "-C", REPO_ROOT, "log", "-1", "--format=%h %s"]).replace("fatal: ", "none: ")


def machine_description(arguments: argparse.Namespace | None = None) -> dict[str, str]:
    with open("/proc/cpuinfo", encoding="ascii") as cpuinfo:
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    machine = {"nproc": str(os.cpu_count()), "kernel": platform.release(), "cpu": cpu,
               "rsync": first_line([SYSTEM_RSYNC, "--version"]),
               "lsyncd": first_line(["/usr/bin/lsyncd", "-version"]),
               "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
               "pirsyncd commit": getattr(arguments, "commit", None) or checkout_commit(),
               "pirsyncd bytecode": "compiled before the runs (pirsyncd/__pycache__), as the Debian package's "
                                    "py3compile does at install"}
    if arguments is not None and (arguments.watch_backends or arguments.source_tmpfs
                                  or any(name in BOTH_BACKENDS for name in arguments.workloads)):
        machine["sources"] = ("each on a tmpfs of its own (mount -t tmpfs, bench/scratchfs.py) for "
                              f"{', '.join(BOTH_BACKENDS)}"
                              + (" and every workload" if arguments.watch_backends or arguments.source_tmpfs else "")
                              + f"; destinations and floor copies under {arguments.root}")
        machine["fs.inotify.max_user_watches"] = (f"{backends.read_max_user_watches()}"
                                                  + (f" (W11: {arguments.max_user_watches})"
                                                     if arguments.max_user_watches else ""))
    if arguments is not None and any(info["rsync_binary"] != SYSTEM_RSYNC for info in arguments.run_notes):
        machine["rsync (fixed, W6 missing-args)"] = f"{rsync_version(arguments.fixed_rsync)} ({arguments.fixed_rsync})"
    return machine


def write_markdown(path: str, rows: list[dict], machine: dict[str, str], command: str,
                   arguments: argparse.Namespace, failures: list[str], three_way: list[list[str]] | None = None
                   ) -> None:
    lines = ["# Benchmark results: pirsyncd against lsyncd 2.2.3", "",
             f"Command: `{command}` (trees under {arguments.root}, {arguments.repeat} repetitions"
             + (f", {', '.join(LARGE_WORKLOADS)} {arguments.large_repeat}" if arguments.large_repeat else "")
             + ", medians).",
             f"Run: {time.strftime('%Y-%m-%d %H:%M %Z')}", "", "Machine:", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    digests = getattr(arguments, "pirsyncd_digests", [])
    lines.append(f"- pirsyncd code (sha256 of pirsyncd/*.py, first 12): {', '.join(digests) or '-'}"
                 + (" — the engine changed during the run; runs mix versions" if len(digests) > 1 else ""))
    lines += ["", "Workloads:", ""]
    lines += [f"- {name}: {DESCRIPTIONS[name]}" for name in arguments.workloads]
    notes = notes_lines(getattr(arguments, "run_notes", []))
    if notes or getattr(arguments, "skipped", []):
        lines += ["", "The rsync and the deletion path of each workload's runs:", "", *[f"- {line}" for line in notes],
                  *[f"- skipped: {skipped}" for skipped in getattr(arguments, "skipped", [])]]
    lines += ["", *table_lines(rows, markdown=True), ""]
    if three_way:
        lines += ["pirsyncd's two watch backends and lsyncd side by side (the same runs as above):", "",
                  *markdown_lines(three_way), ""]
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
    if arguments.watch_backends or arguments.source_tmpfs or any(name in BOTH_BACKENDS for name in arguments.workloads):
        problem = scratchfs.mount_refusal(arguments.root)
        if problem:
            print(f"run.py: the sources need a tmpfs of their own: {problem}", file=sys.stderr)
            return 2
    command = shlex.join([os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd())
                          else sys.executable, *sys.argv])
    arguments.commit = checkout_commit()
    ssh_workloads = [name for name in arguments.workloads if name.endswith("ssh")]
    arguments.skipped = []
    if ("W6" in arguments.workloads and "pirsyncd" in arguments.daemons and "missing-args" in arguments.deletion_modes
            and arguments.fixed_rsync is None):
        arguments.skipped.append(f"W6 pirsyncd/missing-args: no fixed rsync (give --fixed-rsync PATH or put one at "
                                 f"{DEFAULT_FIXED_RSYNC})")
        print(f"run.py: {arguments.skipped[-1]}", file=sys.stderr)
    if (any(name.startswith("W8") for name in arguments.workloads) and "pirsyncd" in arguments.daemons
            and not restart.warm_supported()):
        arguments.skipped.append(restart.warm_skip_reason())
        print(f"run.py: {arguments.skipped[-1]}", file=sys.stderr)
    if ssh_workloads:
        with loopback_sshd() as ssh:
            results, failures = run_all(arguments, ssh)
    else:
        results, failures = run_all(arguments, None)
    rows = summarize(table_views(results))
    machine = machine_description(arguments)
    print("\n".join(table_lines(rows, markdown=False)))
    three_way = backends.backend_rows(results, FIGURES_WITH_FLOOR)
    if three_way:
        widths = [max(len(row[column]) for row in three_way) for column in range(len(three_way[0]))]
        print("\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                        for row in three_way))
    for line in notes_lines(arguments.run_notes) + [f"skipped: {skipped}" for skipped in arguments.skipped]:
        print(line)
    for failure in failures:
        print(f"FAILED {failure}")
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as json_file:
            json.dump({"command": command, "machine": machine, "arguments": vars(arguments),
                       "results": results, "summary": rows, "run_notes": arguments.run_notes,
                       "skipped": arguments.skipped, "failures": failures}, json_file, indent=1)
    if arguments.results_md:
        write_markdown(arguments.results_md, rows, machine, command, arguments, failures, three_way)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
