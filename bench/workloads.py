"""Workloads W1-W6 (W1-W5 of issue 8, W6 deletions) and W9 (sustained churn, issue 23). Each takes a
started, ready daemon (a :class:`Session`) and returns a flat dict of figures; ``floor_*`` functions
measure one plain ``rsync -a`` of the same tree.

Figure names end in their unit: ``_ms``, ``_s``, ``_mib``, ``_per_s``; plain counts have none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import select
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from bench import measure, scratchfs
from bench.daemons import SYSTEM_RSYNC, RunningDaemon, Setup, SshTarget, start_daemon
from tests.support.daemon import read_status_file
from tests.support.processes import stop_process
from tests.support.trees import wait_for

WRAPPER_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rsync-wrapper")
REAL_RSYNC = SYSTEM_RSYNC
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Scale:
    """Workload sizes; ``QUICK`` keeps the whole run to seconds for CI."""

    w1_files: int = 50
    w1_interval: float = 0.2
    w2_dirs: int = 1000
    w2_files_per_dir: int = 10
    w3_top_dirs: int = 100
    w3_subdirs: int = 199       # 100 + 100 * 199 = 20,000 directories
    w3_files_per_dir: int = 5   # 5 * 20,000 = 100,000 files
    w4_files: int = 200
    w4_file_size: int = MIB     # 200 MiB
    w5_window: float = 10.0
    w5_settle: float = 2.0
    w6_many_files: int = 1000   # deleted from one directory (W6 many_files)
    w6_deep_levels: int = 8     # directories below a t*/s* leaf for W6's deep file
    w6_quiet: float = 0.5       # no rsync run for this long (plus the delay): the daemon has settled
    w6_noop_repeats: int = 3    # no-op full rsync runs timed per W6 run (median)
    w9_rates: tuple[int, ...] = (100, 1000)  # files written per second, one daemon run each ...
    w9_delays: tuple[float, ...] = (0.0, 1.0)  # ... at each of these delays
    w9_seconds: float = 30.0
    w9_dirs: int = 50
    timeout: float = 300.0


FULL = Scale()
QUICK = Scale(w1_files=5, w1_interval=0.05, w2_dirs=20, w2_files_per_dir=5, w3_top_dirs=5,
              w3_subdirs=9, w3_files_per_dir=2, w4_files=5, w4_file_size=256 * 1024,
              w5_window=1.0, w5_settle=0.3, w6_many_files=20, w6_quiet=0.1, w6_noop_repeats=1,
              w9_rates=(200,), w9_delays=(0.0, 0.25), w9_seconds=1.0, w9_dirs=5, timeout=60.0)
LARGE = dataclasses.replace(FULL, w3_top_dirs=200, w3_subdirs=499, w3_files_per_dir=10, timeout=1800.0)


@dataclasses.dataclass
class Session:
    """A daemon started on a fresh source/destination pair and ready (initial sync done)."""

    daemon: RunningDaemon
    setup: Setup
    ready_at: float
    probe_s: float


@contextlib.contextmanager
def daemon_session(daemon_name: str, root: str, label: str, delay: float, timeout: float,
                   populate: Callable[[str], None] | None = None, ssh: SshTarget | None = None,
                   keep: bool = False, real_rsync: str = REAL_RSYNC,
                   pirsyncd_arguments: tuple[str, ...] = (), own_source_fs: bool = False) -> Iterator[Session]:
    """Start the daemon on a fresh source (populated first) and an empty destination under
    ``root``; yield once it is ready and a probe file was mirrored; stop it by PID at the end.
    ``own_source_fs``: the source is ``RUN/fs/src`` on a tmpfs of its own (:mod:`bench.scratchfs`),
    so a fanotify mark sees only what happens there; the destination stays under ``root``."""
    run_dir = tempfile.mkdtemp(prefix=f"pirsyncd-bench-{label}-{daemon_name}-", dir=root)
    with contextlib.ExitStack() as mounts:
        if own_source_fs:
            mounts.enter_context(scratchfs.own_tmpfs(os.path.join(run_dir, "fs")))
        source = os.path.join(run_dir, "fs", "src") if own_source_fs else os.path.join(run_dir, "src")
        try:
            with _session(daemon_name, run_dir, source, delay, timeout, populate, ssh, real_rsync,
                          pirsyncd_arguments) as session:
                yield session
        finally:
            if not keep:
                mounts.close()  # unmounted first: removing a million files one by one takes long
                shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def _session(daemon_name: str, run_dir: str, source: str, delay: float, timeout: float,
             populate: Callable[[str], None] | None, ssh: SshTarget | None, real_rsync: str,
             pirsyncd_arguments: tuple[str, ...]) -> Iterator[Session]:
    destination = os.path.join(run_dir, "dst")
    os.mkdir(source)
    os.mkdir(destination)
    with open(os.path.join(source, "seed"), "wb") as seed:
        seed.write(b"seed\n")  # pirsyncd rightly refuses to mirror an empty source
    if populate is not None:
        populate(source)
    wrapper = os.path.join(run_dir, "rsync-wrapper")
    shutil.copy2(WRAPPER_TEMPLATE, wrapper)
    setup = Setup(run_dir, source, destination, wrapper, wrapper + ".log",
                  os.path.join(run_dir, "status.json"), delay, ssh, real_rsync, pirsyncd_arguments)
    daemon = start_daemon(daemon_name, setup)
    try:
        ready_at = daemon.wait_ready(timeout)
        probe_s = daemon.probe("bench-probe-ready", timeout)
        yield Session(daemon, setup, ready_at, probe_s)
    finally:
        daemon.stop()


# -- tree builders -----------------------------------------------------------------------------

def write_file(path: str, content: bytes) -> None:
    with open(path, "wb") as file:
        file.write(content)


def unique_block(index: int, size: int, noise: bytes) -> bytes:
    """``size`` bytes, different for every index, cheap to make."""
    header = f"{index:012d}\n".encode()
    return header + noise[: size - len(header)]


def build_many_dirs(root: str, top_dirs: int, subdirs: int, files_per_dir: int, file_size: int = 100) -> None:
    noise = os.urandom(file_size)
    index = 0
    for top in range(top_dirs):
        top_path = os.path.join(root, f"t{top:04d}")
        os.mkdir(top_path)
        for sub in [None, *range(subdirs)]:
            directory = top_path if sub is None else os.path.join(top_path, f"s{sub:04d}")
            if sub is not None:
                os.mkdir(directory)
            for number in range(files_per_dir):
                write_file(os.path.join(directory, f"f{number}"), unique_block(index, file_size, noise))
                index += 1


# -- floors ------------------------------------------------------------------------------------

def plain_rsync_command(source_dir: str, destination_dir: str, ssh: SshTarget | None,
                        control_path: str | None = None) -> list[str]:
    """``rsync -a SRC/ DST/``, or over ssh
    ``rsync -a -e 'ssh -p PORT -i KEY -o...' SRC/ root@127.0.0.1:DST/`` (through an open
    ControlMaster connection when ``control_path`` is given)."""
    if ssh is None:
        return [REAL_RSYNC, "-a", source_dir + "/", destination_dir + "/"]
    return [REAL_RSYNC, "-a", "-e", shlex.join(ssh_words(ssh, control_path)), source_dir + "/",
            f"{ssh.user}@{ssh.host}:{destination_dir}/"]


def ssh_words(ssh: SshTarget, control_path: str | None = None) -> list[str]:
    words = ["ssh", "-p", str(ssh.port), "-i", ssh.identity_file]
    words += [f"-o{key}={value}" for key, value in ssh.options.items()]
    return words + (["-S", control_path] if control_path else [])


def timed_rsync(source_dir: str, destination_dir: str, ssh: SshTarget | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the rsync process tree) of one plain rsync."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(plain_rsync_command(source_dir, destination_dir, ssh), check=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def floor_copy(source: str, scratch_root: str, ssh: SshTarget | None = None) -> dict[str, float]:
    """One plain ``rsync -a SRC/ DST/`` of the final tree into an empty directory: its wall time
    and the CPU time of its processes (less sensitive than the wall time to other load)."""
    destination = tempfile.mkdtemp(prefix="pirsyncd-bench-floor-", dir=scratch_root)
    try:
        elapsed, cpu = timed_rsync(source, destination, ssh)
        return {"floor_s": elapsed, "floor_cpu_s": cpu}
    finally:
        shutil.rmtree(destination, ignore_errors=True)


def floor_one_file(scratch_root: str, ssh: SshTarget | None = None, repeats: int = 7) -> dict[str, float]:
    """W1's floor: a plain ``rsync -a`` of a directory holding one new 4 KiB file, from starting
    rsync until inotify shows the file complete at the destination (median). rsync's own exit
    comes tens of milliseconds later (it polls for its children), so its wall time would overstate
    the floor. Over ssh also ``floor_shared_ssh_ms``: the same through an ssh connection that is
    already open (ControlMaster), the floor for a daemon that keeps one."""
    floors = {"floor_ms": one_file_arrival_ms(scratch_root, ssh, None, repeats)}
    if ssh is not None:
        control_directory = tempfile.mkdtemp(prefix="pirsyncd-bench-ssh-", dir=scratch_root)
        control_path = os.path.join(control_directory, "master")
        master = subprocess.Popen([*ssh_words(ssh), "-M", "-S", control_path, "-N", f"{ssh.user}@{ssh.host}"],
                                  stdin=subprocess.DEVNULL)
        def master_up() -> bool:
            if master.poll() is not None:
                raise RuntimeError(f"the ssh ControlMaster exited with status {master.returncode}")
            return subprocess.run([*ssh_words(ssh, control_path), "-O", "check", f"{ssh.user}@{ssh.host}"],
                                  capture_output=True, check=False).returncode == 0

        try:
            wait_for(master_up, 20, "ssh ControlMaster for the shared-connection floor did not start",
                     error=RuntimeError)
            floors["floor_shared_ssh_ms"] = one_file_arrival_ms(scratch_root, ssh, control_path, repeats)
        finally:
            stop_process(master, 10)
            shutil.rmtree(control_directory, ignore_errors=True)
    return floors


def one_file_arrival_ms(scratch_root: str, ssh: SshTarget | None, control_path: str | None,
                        repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        work = tempfile.mkdtemp(prefix="pirsyncd-bench-floor-", dir=scratch_root)
        try:
            source = os.path.join(work, "src")
            destination = os.path.join(work, "dst")
            os.mkdir(source)
            os.mkdir(destination)
            write_file(os.path.join(source, "one"), os.urandom(4096))
            with INotify() as inotify:
                inotify.add_watch(destination, inotify_flags.CLOSE_WRITE | inotify_flags.MOVED_TO)
                started = time.perf_counter()
                rsync = subprocess.Popen(plain_rsync_command(source, destination, ssh, control_path))
                arrived = float("nan")
                while arrived != arrived and inotify.fd in select.select([inotify.fd], [], [], 10)[0]:
                    if any(event.name == "one" for event in inotify.read(timeout=0)):
                        arrived = time.perf_counter() - started
                rsync.wait()
            timings.append(arrived)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return measure.median(timings) * 1000


# -- W1 latency --------------------------------------------------------------------------------

def w1_latency(session: Session, scale: Scale) -> dict[str, float]:
    """One 4 KiB file every interval, written plainly then written-then-renamed; latency from the
    close (or rename) to the moment inotify on the destination shows the full content there."""
    figures: dict[str, float] = {"probe_ms": session.probe_s * 1000}
    destination = session.setup.destination_path
    with INotify() as inotify:
        inotify.add_watch(destination, inotify_flags.CLOSE_WRITE | inotify_flags.MOVED_TO)
        for phase in ("plain", "renamed"):
            phase_started = time.time()
            latencies, written_at = measure_arrivals(session, inotify, phase, scale)
            runs = measure.read_rsync_log(session.setup.rsync_log).finished
            # rsync runs the phase took per file (a file sent before its close is sent twice).
            figures[f"{phase}_runs_per_file"] = sum(run.start >= phase_started for run in runs) / scale.w1_files
            # Reaction time: from the close/rename to the start of the next rsync run (the wrapper's
            # first line), which separates the daemon's own delay from rsync's time.
            dispatch = [min((run.start for run in runs if run.start >= moment), default=float("nan")) - moment
                        for moment in written_at]
            figures[f"{phase}_dispatch_p50_ms"] = measure.percentile(dispatch, 0.5) * 1000
            figures[f"{phase}_p50_ms"] = measure.percentile(latencies, 0.5) * 1000
            figures[f"{phase}_p90_ms"] = measure.percentile(latencies, 0.9) * 1000
            figures[f"{phase}_max_ms"] = max(latencies, default=float("nan")) * 1000
            figures[f"{phase}_missing"] = scale.w1_files - len(latencies)
    return figures


def measure_arrivals(session: Session, inotify: INotify, phase: str, scale: Scale
                     ) -> tuple[list[float], list[float]]:
    """Write the files of one phase; return (latencies of those that arrived, when each was written)."""
    source = session.setup.source
    destination = session.setup.destination_path
    expected: dict[str, tuple[bytes, float]] = {}
    arrived: dict[str, float] = {}
    next_write = time.monotonic()
    deadline = float("inf")
    written = 0
    while len(arrived) < scale.w1_files and time.monotonic() < deadline:
        now = time.monotonic()
        if written < scale.w1_files and now >= next_write:
            name = f"{phase}-{written:03d}"
            content = os.urandom(4096)
            if phase == "plain":
                write_file(os.path.join(source, name), content)
            else:
                write_file(os.path.join(source, f".{name}.tmp"), content)
                os.rename(os.path.join(source, f".{name}.tmp"), os.path.join(source, name))
            expected[name] = (content, time.time())
            written += 1
            next_write += scale.w1_interval
            if written == scale.w1_files:
                deadline = time.monotonic() + 30
            continue
        wait = (next_write if written < scale.w1_files else deadline) - now
        ready, _, _ = select.select([inotify.fd], [], [], max(0.0, wait))
        if not ready:
            continue
        seen_at = time.time()
        for event in inotify.read(timeout=0):
            if event.name in expected and event.name not in arrived:
                content, written_at = expected[event.name]
                try:
                    if measure.read_bytes(os.path.join(destination, event.name)) == content:
                        arrived[event.name] = seen_at - written_at
                except FileNotFoundError:
                    pass
    return list(arrived.values()), [written_at for _content, written_at in expected.values()]


# -- W2 burst ----------------------------------------------------------------------------------

def w2_burst(session: Session, scale: Scale) -> dict[str, float]:
    """dirs x files x 4 KiB created as fast as possible; seconds from the first mkdir until the
    destination is identical, rsync runs, bytes the rsync runs wrote, daemon CPU and peak RSS."""
    source = session.setup.source
    pid = session.daemon.pid
    cpu_before = measure.cpu_seconds(pid)
    noise = os.urandom(4096)
    started = time.time()
    index = 0
    for number in range(scale.w2_dirs):
        directory = os.path.join(source, f"burst{number:04d}")
        os.mkdir(directory)
        for file_number in range(scale.w2_files_per_dir):
            write_file(os.path.join(directory, f"f{file_number}"), unique_block(index, 4096, noise))
            index += 1
    burst_done = time.time()
    converged_at, runs = measure.wait_converged(source, session.setup.destination_path,
                                                session.setup.rsync_log, started, scale.timeout)
    return {
        "converge_s": (converged_at - started) if converged_at else float("nan"),
        "burst_s": burst_done - started,
        "rsync_runs": len(runs),
        "rsync_wchar_mib": sum(run.wchar for run in runs) / MIB,
        "daemon_cpu_s": measure.cpu_seconds(pid) - cpu_before,
        "peak_rss_mib": measure.peak_rss_mib(pid),
        "identical": float(measure.trees_identical(source, session.setup.destination_path)),
    }


# -- W3 startup --------------------------------------------------------------------------------

def w3_populate(scale: Scale) -> Callable[[str], None]:
    return lambda source: build_many_dirs(source, scale.w3_top_dirs, scale.w3_subdirs, scale.w3_files_per_dir)


def w3_startup(session: Session, scale: Scale) -> dict[str, float]:
    """Seconds from starting the daemon until the mirror is complete (end of the last rsync run)
    and the daemon says so; then the latency of a probe file (proof that it watches)."""
    daemon = session.daemon
    runs = measure.read_rsync_log(session.setup.rsync_log).finished
    synced_at = max((run.end for run in runs if run.end <= session.ready_at + 0.001),
                    default=session.ready_at)
    longest = max((run for run in runs if run.start <= session.ready_at), key=lambda run: run.end - run.start,
                  default=None)
    return {
        "ready_s": max(session.ready_at, synced_at) - daemon.started_at,
        "synced_s": synced_at - daemon.started_at,
        # When the initial full rsync started: the daemon's own start-up work (imports, watches).
        "full_sync_start_s": (longest.start - daemon.started_at) if longest else float("nan"),
        "probe_ms": session.probe_s * 1000,
        "rsync_runs": sum(run.start <= session.ready_at for run in runs),
        "daemon_cpu_s": measure.cpu_seconds(daemon.pid),
        # The rsync runs' CPU (the wrapper's cutime + cstime) up to in sync; with the daemon's, the
        # work it took, to set against the floor's CPU (cpu_x_floor): less sensitive to other load.
        "rsync_cpu_s": sum(run.cpu_s for run in runs if run.start <= session.ready_at),
        "peak_rss_mib": measure.peak_rss_mib(daemon.pid),
        "identical": float(measure.trees_identical(session.setup.source, session.setup.destination_path)),
    }


# -- W4 rename ---------------------------------------------------------------------------------

def w4_populate(scale: Scale) -> Callable[[str], None]:
    def populate(source: str) -> None:
        os.mkdir(os.path.join(source, "data"))
        for number in range(scale.w4_files):
            write_file(os.path.join(source, "data", f"blob{number:04d}"), os.urandom(scale.w4_file_size))
    return populate


def w4_rename(session: Session, scale: Scale) -> dict[str, float]:
    """Rename the mirrored directory; seconds to converge, bytes the rsync runs wrote (see the
    wrapper) and how many destination files kept their inode (moved rather than re-sent)."""
    source = session.setup.source
    destination = session.setup.destination_path
    old_inodes = {entry.stat().st_ino for entry in os.scandir(os.path.join(destination, "data"))}
    started = time.time()
    os.rename(os.path.join(source, "data"), os.path.join(source, "data-renamed"))
    converged_at, runs = measure.wait_converged(source, destination, session.setup.rsync_log, started,
                                                scale.timeout)
    renamed = os.path.join(destination, "data-renamed")
    kept = 0
    if os.path.isdir(renamed):
        kept = sum(entry.stat().st_ino in old_inodes for entry in os.scandir(renamed))
    wchar = sum(run.wchar for run in runs)
    return {
        "converge_s": (converged_at - started) if converged_at else float("nan"),
        "rsync_runs": len(runs),
        "rsync_wchar_mib": wchar / MIB,
        "wchar_pct_of_tree": 100 * wchar / (scale.w4_files * scale.w4_file_size),
        "inodes_kept": kept,
        "identical": float(measure.trees_identical(source, destination)),
    }


# -- W5 idle -----------------------------------------------------------------------------------

def w5_populate(source: str) -> None:
    build_many_dirs(source, 10, 9, 10)


def w5_idle(session: Session, scale: Scale) -> dict[str, float]:
    """No changes for the window: the daemon's CPU time (all threads, schedstat) and context
    switches per second (each wake-up of a sleeping thread is one voluntary switch)."""
    pid = session.daemon.pid
    time.sleep(scale.w5_settle)
    runs_before = len(measure.read_rsync_log(session.setup.rsync_log).finished)
    before = measure.read_activity(pid)
    started = time.monotonic()
    time.sleep(scale.w5_window)
    after = measure.read_activity(pid)
    elapsed = time.monotonic() - started
    return {
        "cpu_ms": (after.runtime_ns - before.runtime_ns) / 1e6,
        "wakeups_per_s": (after.context_switches - before.context_switches) / elapsed,
        "rsync_runs": len(measure.read_rsync_log(session.setup.rsync_log).finished) - runs_before,
    }


# -- W6 deletions ------------------------------------------------------------------------------

W6_PLACES = ("root_file", "mid_file", "deep_file", "top_dir", "many_files")


@dataclasses.dataclass(frozen=True)
class W6Layout:
    """What W6 deletes, relative to the tree root: places in (or added to) the W3 tree."""

    root_file: str               # a file at the root, beside the t* directories
    mid_file: str                # a file in a top-level directory (199 subdirectories, 5 files)
    deep_file: str               # a file w6_deep_levels directories below a t*/s* leaf
    top_dir: str                 # a whole top-level directory (199 subdirectories, 1,000 files)
    many_dir: str                # a directory whose w6_many_files files are all deleted
    many_names: tuple[str, ...]

    def paths(self, place: str) -> list[str]:
        if place == "many_files":
            return [os.path.join(self.many_dir, name) for name in self.many_names]
        return [getattr(self, place)]


def w6_layout(scale: Scale) -> W6Layout:
    """The places, spread over the top-level directories (distinct for any w3_top_dirs >= 5).

    >>> w6_layout(FULL).mid_file, w6_layout(FULL).top_dir
    ('t0050/f0', 't0033')
    """
    def top(fraction_num: int, fraction_den: int) -> str:
        return f"t{scale.w3_top_dirs * fraction_num // fraction_den:04d}"
    deep_dir = os.path.join(top(3, 5), f"s{scale.w3_subdirs // 2:04d}",
                            *(f"deep{level}" for level in range(1, scale.w6_deep_levels + 1)))
    return W6Layout(root_file="w6-root-file", mid_file=os.path.join(top(1, 2), "f0"),
                    deep_file=os.path.join(deep_dir, "w6-deep-file"), top_dir=top(1, 3),
                    many_dir=os.path.join(top(4, 5), "w6-many"),
                    many_names=tuple(f"m{number:05d}" for number in range(scale.w6_many_files)))


def w6_populate(scale: Scale) -> Callable[[str], None]:
    """The W3 tree plus W6's root file, deep chain and directory of many files."""
    layout = w6_layout(scale)

    def populate(source: str) -> None:
        build_many_dirs(source, scale.w3_top_dirs, scale.w3_subdirs, scale.w3_files_per_dir)
        noise = os.urandom(100)
        write_file(os.path.join(source, layout.root_file), unique_block(0, 100, noise))
        os.makedirs(os.path.join(source, os.path.dirname(layout.deep_file)))
        write_file(os.path.join(source, layout.deep_file), unique_block(1, 100, noise))
        os.mkdir(os.path.join(source, layout.many_dir))
        for number, name in enumerate(layout.many_names):
            write_file(os.path.join(source, layout.many_dir, name), unique_block(2 + number, 100, noise))
    return populate


def noop_full_rsync(real_rsync: str, source: str, destination: str, repeats: int) -> tuple[float, int]:
    """(median seconds, changes the first run itemized) of ``rsync -a --delete SRC/ DST/`` on the
    in-sync tree: what a full sync costs when nothing needs sending (``-i`` only adds output; 0
    changes means the daemon's mirror was complete, metadata included)."""
    timings = []
    changes = 0
    for number in range(repeats):
        started = time.perf_counter()
        result = subprocess.run([real_rsync, "-a", "--delete", "-i", source + "/", destination + "/"],
                                check=True, stdout=subprocess.PIPE)
        timings.append(time.perf_counter() - started)
        if number == 0:
            changes = len(result.stdout.splitlines())
    return measure.median(timings), changes


def daemon_idle(session: Session) -> bool:
    """pirsyncd: its status file says in-sync with nothing pending; lsyncd has no such signal."""
    if session.daemon.name != "pirsyncd":
        return True
    status = read_status_file(session.setup.status_file)
    return status.get("state") == "in-sync" and not status.get("pending")


def wait_settled(session: Session, quiet: float, timeout: float) -> None:
    """Until no rsync run is in flight, none has ended for ``quiet`` seconds and the daemon is
    idle; raises after ``timeout``."""
    def settled() -> bool:
        session.daemon.check_alive()
        log = measure.read_rsync_log(session.setup.rsync_log)
        if log.running_pids:
            return False
        last_end = max((run.end for run in log.finished), default=0.0)
        return time.time() - last_end >= quiet and daemon_idle(session)

    wait_for(settled, timeout, lambda: f"{session.daemon.name} did not settle "
                                       f"(W6; status {read_status_file(session.setup.status_file)})",
             poll=0.01, error=RuntimeError)


def wait_deleted(session: Session, gone: Callable[[], bool], since: float, quiet: float,
                 timeout: float) -> tuple[float | None, list[measure.RsyncRun]]:
    """Wait until the deletion is done and the daemon has settled; return (when the daemon's last
    rsync run started since ``since`` ended, or, without any, when the entry was seen gone; None
    on timeout) and those runs. The destination is looked at only while no rsync run is in
    flight; settled = no run in flight or started for ``quiet`` seconds and the daemon idle."""
    deadline = time.monotonic() + timeout
    gone_at: float | None = None
    while time.monotonic() < deadline:
        log = measure.read_rsync_log(session.setup.rsync_log)
        if not log.running_pids:
            now = time.time()
            if gone_at is None and gone():
                gone_at = now
            if gone_at is not None:
                runs = log.finished_since(since)
                last_end = max((run.end for run in runs), default=None)
                if now - max(last_end or 0.0, gone_at) >= quiet and daemon_idle(session):
                    return (last_end if last_end is not None else gone_at), runs
        session.daemon.check_alive()
        time.sleep(0.005)
    return None, measure.read_rsync_log(session.setup.rsync_log).finished_since(since)


def w6_gone_check(destination: str, layout: W6Layout, place: str) -> Callable[[], bool]:
    """True once the destination has none of the place's entries (one listing for many_files)."""
    if place == "many_files":
        directory = os.path.join(destination, layout.many_dir)
        names = frozenset(layout.many_names)

        def many_gone() -> bool:
            try:
                return names.isdisjoint(os.listdir(directory))
            except FileNotFoundError:
                return True
        return many_gone
    target = os.path.join(destination, layout.paths(place)[0])
    return lambda: not os.path.lexists(target)


def w6_deletions(session: Session, scale: Scale) -> tuple[dict[str, float], dict[str, str]]:
    """Delete at each place of :func:`w6_layout`, one at a time, each after the daemon has settled.
    Busy time: from the deletion until the end of the last rsync run it caused, the entry gone at
    the destination. Reference: a no-op full rsync of the same in-sync tree with the same rsync
    binary, in the same run; ``PLACE_x_noop`` = busy / no-op. Returns (figures, notes): the
    notes hold pirsyncd's ``deletion_path`` from its status file when it reports one."""
    setup = session.setup
    source, destination = setup.source, setup.destination_path
    layout = w6_layout(scale)
    quiet = scale.w6_quiet + setup.delay
    wait_settled(session, quiet, scale.timeout)
    noop, noop_changes = noop_full_rsync(setup.real_rsync, source, destination, scale.w6_noop_repeats)
    # Generous (the goal is 0.15 x the no-op), but bounded: a daemon that never finishes a
    # deletion costs this, not the whole workload timeout, per place.
    deletion_timeout = min(scale.timeout, max(30.0, 20 * noop))
    figures: dict[str, float] = {"noop_full_s": noop, "noop_changes": noop_changes}
    failed_runs = 0
    for place in W6_PLACES:
        wait_settled(session, quiet, scale.timeout)
        relative_paths = layout.paths(place)
        started = time.time()
        if place == "top_dir":
            shutil.rmtree(os.path.join(source, layout.top_dir))
        else:
            for relative in relative_paths:
                os.unlink(os.path.join(source, relative))
        ended, runs = wait_deleted(session, w6_gone_check(destination, layout, place), started, quiet,
                                   deletion_timeout)
        busy = (ended - started) if ended is not None else float("nan")
        figures[f"{place}_busy_s"] = busy
        figures[f"{place}_x_noop"] = busy / noop if noop else float("nan")
        figures[f"{place}_runs"] = len(runs)
        failed_runs += sum(run.status != 0 for run in runs)
    ratios = [figures[f"{place}_x_noop"] for place in W6_PLACES]
    figures["max_x_noop"] = float("nan") if any(ratio != ratio for ratio in ratios) else max(ratios)
    figures["rsync_failed_runs"] = failed_runs
    figures["identical"] = float(measure.trees_identical(source, destination))
    notes: dict[str, str] = {}
    status = read_status_file(setup.status_file) if session.daemon.name == "pirsyncd" else {}
    if status.get("deletion_path"):
        notes["deletion_path"] = str(status["deletion_path"])
    return figures, notes


# -- W9 sustained churn ------------------------------------------------------------------------

def w9_populate(scale: Scale) -> Callable[[str], None]:
    """The directories the writer spreads its files over (there before the daemon starts)."""
    def populate(source: str) -> None:
        for number in range(scale.w9_dirs):
            os.mkdir(os.path.join(source, f"d{number:02d}"))
    return populate


def w9_churn(daemon_name: str, root: str, scale: Scale, keep: bool = False) -> dict[str, float]:
    """W9: for each rate and delay, a fresh daemon and a writer creating small files at that rate
    over the directories for ``w9_seconds``; figures prefixed ``rRATE_dDELAY_`` (``r100_d1_``)."""
    figures: dict[str, float] = {}
    for rate in scale.w9_rates:
        for delay in scale.w9_delays:
            with daemon_session(daemon_name, root, f"W9-{rate}-{delay:g}", delay, scale.timeout,
                                w9_populate(scale), keep=keep) as session:
                variant = sustained_writes(session, scale, rate)
            figures.update({f"r{rate}_d{delay:g}_{name}": value for name, value in variant.items()})
    return figures


def sustained_writes(session: Session, scale: Scale, rate: int) -> dict[str, float]:
    """Write ``rate`` files of 100 bytes a second (each its own open-write-close) round robin over
    the directories for ``w9_seconds``, then wait until the destination mirrors the source. Each
    file's lag is read from the destination: rsync keeps the source's mtime (the write) and the
    destination's ctime is the rename into place. Also: rsync runs, the daemon's CPU time, and
    ``settle_s``, from the last write until the mirror is complete."""
    source, destination = session.setup.source, session.setup.destination_path
    pid = session.daemon.pid
    noise = os.urandom(100)
    total = int(rate * scale.w9_seconds)
    names = [os.path.join(f"d{index % scale.w9_dirs:02d}", f"f{index:06d}") for index in range(total)]
    cpu_before = measure.cpu_seconds(pid)
    started = time.time()
    began = time.monotonic()
    for index, name in enumerate(names):
        ahead = began + index / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the writer, not waiting for the daemon
        write_file(os.path.join(source, name), unique_block(index, 100, noise))
    writing_s = time.monotonic() - began
    last_write = time.time()
    converged_at, runs = measure.wait_converged(source, destination, session.setup.rsync_log, started,
                                                scale.timeout)
    cpu = measure.cpu_seconds(pid) - cpu_before
    lags = []
    for name in names:
        try:
            status = os.stat(os.path.join(destination, name))
        except FileNotFoundError:
            continue
        lags.append((status.st_ctime_ns - status.st_mtime_ns) / 1e9)
    return {
        "lag_p50_s": measure.percentile(lags, 0.5),
        "lag_p99_s": measure.percentile(lags, 0.99),
        "lag_max_s": max(lags, default=float("nan")),
        "rsync_runs": len(runs),
        "daemon_cpu_s": cpu,
        "settle_s": (converged_at - last_write) if converged_at else float("nan"),
        "written_per_s": total / writing_s,
        "missing": total - len(lags),
        "identical": float(measure.trees_identical(source, destination)),
    }
