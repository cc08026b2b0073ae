"""Issue 27: pirsyncd's two watch backends, fanotify and inotify, against lsyncd.

- **W11 beyond the watch limit**: a tree of more directories than ``fs.inotify.max_user_watches``
  allows (300,000 against the kernel's default of this machine), source on a tmpfs of its own.
  Each contender is started on it; what it does is recorded: in sync or not, its exit status,
  its inotify watches, the limit warning (pirsyncd) or the failure (lsyncd); then, if it is still
  running, the time to mirror a new file in a directory 8 levels down (``deep_change_s``), and for
  inotify also in a directory it was found not to watch (``unwatched_change_s``).
- **W12 the mark's cost for other writers**: a writer loop (create, write 100 bytes, close,
  unlink; ``os`` calls, no buffering) in a directory *beside* the source on the same file system,
  and one *inside* the source, timed with no daemon and with the daemon running; ratios of the
  writer's wall time and CPU time, the daemon's CPU time meanwhile and its rsync runs.

Both return flat figures (``run.py`` tables them); the text outcomes (warnings, failures) go to
the notes printed under the table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator

from bench import measure, scratchfs
from bench.daemons import DaemonNotReady, RunningDaemon, Setup, start_daemon
from bench.workloads import WRAPPER_TEMPLATE, build_many_dirs, daemon_session, floor_copy, w5_populate, write_file
from tests.support.daemon import read_status_file
from tests.support.processes import inotify_watched_inodes
from tests.support.trees import wait_for

MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"
DEEP_LEVELS = 8


@dataclasses.dataclass(frozen=True)
class LimitScale:
    """W11's tree: ``top_dirs`` x (1 + ``subdirs``) directories, ``files_per_dir`` files in each,
    and a chain of DEEP_LEVELS directories below the last one."""

    top_dirs: int = 300
    subdirs: int = 999          # 300 + 300 * 999 = 300,000 directories
    files_per_dir: int = 1
    ready_timeout: float = 900.0
    change_timeout: float = 150.0  # inotify covers unwatched directories by a full sync every 60 s

    @property
    def directories(self) -> int:
        return self.top_dirs * (1 + self.subdirs) + DEEP_LEVELS


LIMIT = LimitScale()
LIMIT_QUICK = LimitScale(top_dirs=5, subdirs=9, ready_timeout=60.0, change_timeout=30.0)


@dataclasses.dataclass(frozen=True)
class MarkScale:
    """W12: files per writer round and rounds per phase (the median round counts)."""

    files: int = 20_000
    rounds: int = 5


MARK = MarkScale()
MARK_QUICK = MarkScale(files=300, rounds=1)


def read_max_user_watches() -> int:
    with open(MAX_USER_WATCHES, encoding="ascii") as knob:
        return int(knob.read())


@contextlib.contextmanager
def max_user_watches(value: int | None) -> Iterator[int]:
    """Set fs.inotify.max_user_watches to ``value`` for the block (None: leave it) and restore it
    afterwards; yields the value in force. The limit is per user and machine-wide."""
    before = read_max_user_watches()
    if value is None or value == before:
        yield before
        return
    with open(MAX_USER_WATCHES, "w", encoding="ascii") as knob:
        knob.write(str(value))
    try:
        yield value
    finally:
        with open(MAX_USER_WATCHES, "w", encoding="ascii") as knob:
            knob.write(str(before))


# -- W11 beyond the watch limit ----------------------------------------------------------------

def limit_populate(scale: LimitScale, source: str) -> str:
    """Build W11's tree in ``source``; return the deep directory (relative)."""
    build_many_dirs(source, scale.top_dirs, scale.subdirs, scale.files_per_dir)
    deep = os.path.join(f"t{scale.top_dirs - 1:04d}", f"s{scale.subdirs - 1:04d}",
                        *(f"deep{level}" for level in range(1, DEEP_LEVELS + 1)))
    os.makedirs(os.path.join(source, deep))
    return deep


def directories_below(source: str) -> list[tuple[str, int]]:
    """(relative path, inode) of every real directory below ``source``, the source first."""
    found = [("", os.lstat(source).st_ino)]
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(os.path.join(source, relative)) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    found.append((os.path.join(relative, entry.name), entry.inode()))
                    pending.append(os.path.join(relative, entry.name))
    return found


def wait_started(daemon: RunningDaemon, timeout: float) -> tuple[float | None, int | None]:
    """Wait until the daemon is in sync (pirsyncd: its status; lsyncd: its startup rsync ended)
    or has exited; return (in-sync epoch or None, exit status or None). Raises on timeout."""
    def outcome() -> tuple[float | None, int | None] | None:
        returncode = daemon.process.poll()
        if returncode is not None:
            return None, returncode
        try:
            return daemon.wait_ready(0.0), None
        except DaemonNotReady:
            return None
    return wait_for(outcome, timeout, lambda: f"{daemon.name}: neither in sync nor exited:\n{daemon.output_tail()}",
                    poll=0.05, error=DaemonNotReady)


def mirrored_after(daemon: RunningDaemon, relative_dir: str, name: str, timeout: float) -> float:
    """Write a file into ``relative_dir`` of the source; seconds until it is at the destination
    (NaN if not within ``timeout`` or the daemon exited)."""
    content = os.urandom(64)
    write_file(os.path.join(daemon.setup.source, relative_dir, name), content)
    written = time.time()
    target = os.path.join(daemon.setup.destination_path, relative_dir, name)

    def arrived() -> float | None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if measure.read_bytes(target) == content:
                return time.time() - written
        if daemon.process.poll() is not None:
            return float("nan")
        return None
    try:
        return wait_for(arrived, timeout, "not mirrored", poll=0.01, error=TimeoutError)
    except TimeoutError:
        return float("nan")


def log_lines(daemon: RunningDaemon, words: tuple[str, ...]) -> list[str]:
    """The daemon's output lines (and lsyncd's log file) holding any of ``words``."""
    paths = [daemon.output_path, os.path.join(daemon.setup.run_dir, "lsyncd.log")]
    lines: list[str] = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8", errors="replace") as output:
            lines += [line.strip() for line in output if any(word in line for word in words)]
    return list(dict.fromkeys(lines))


def watch_limit(daemon_name: str, root: str, scale: LimitScale, pirsyncd_arguments: tuple[str, ...] = (),
                watches: int | None = None, keep: bool = False
                ) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """W11 for one contender: (figures, floor, notes). The floor, one plain ``rsync -a`` of the
    tree into an empty directory under ``root``, is timed after a daemon that got in sync stopped
    (its mirror removed first)."""
    run_dir = tempfile.mkdtemp(prefix=f"pirsyncd-bench-W11-{daemon_name}-", dir=root)
    try:
        with scratchfs.own_tmpfs(os.path.join(run_dir, "fs")), max_user_watches(watches) as limit:
            source = os.path.join(run_dir, "fs", "src")
            destination = os.path.join(run_dir, "dst")
            os.mkdir(source)
            os.mkdir(destination)
            deep = limit_populate(scale, source)
            wrapper = os.path.join(run_dir, "rsync-wrapper")
            shutil.copy2(WRAPPER_TEMPLATE, wrapper)
            setup = Setup(run_dir, source, destination, wrapper, wrapper + ".log",
                          os.path.join(run_dir, "status.json"), 0.0, pirsyncd_arguments=pirsyncd_arguments)
            daemon = start_daemon(daemon_name, setup)
            try:
                figures, notes = limit_outcome(daemon, scale, deep, limit)
            finally:
                daemon.stop()
            if figures["ready_s"] != figures["ready_s"]:
                return figures, {}, notes
            shutil.rmtree(destination)
            floor = floor_copy(source, root)
            figures["ready_x_floor"] = figures["ready_s"] / floor["floor_s"]  # this run's own ratio
            return figures, floor, notes
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def limit_outcome(daemon: RunningDaemon, scale: LimitScale, deep: str, limit: int
                  ) -> tuple[dict[str, float], dict[str, str]]:
    """What one started daemon does on W11's tree (see the module's docstring)."""
    nan = float("nan")
    ready_at, exit_status = wait_started(daemon, scale.ready_timeout)
    figures: dict[str, float] = {
        "max_user_watches": limit, "source_dirs": scale.directories + 1,
        "ready_s": (ready_at - daemon.started_at) if ready_at else nan,
        "exit_status": exit_status if exit_status is not None else nan,
        "exited_after_s": (time.time() - daemon.started_at) if exit_status is not None else nan}
    notes: dict[str, str] = {}
    if daemon.name == "pirsyncd":
        status = read_status_file(daemon.setup.status_file)  # as it started (in sync, or not)
        notes["state"] = str(status.get("state"))
        notes["watch_backend"] = str(status.get("watch_backend"))
        if status.get("warning"):
            notes["warning"] = str(status["warning"])
    if exit_status is None:
        figures["inotify_watches"] = len(watched := set(inotify_watched_inodes(daemon.pid)))
        directories = directories_below(daemon.setup.source)
        unwatched = [relative for relative, inode in directories if inode not in watched]
        # Without a single inotify watch it is pirsyncd on fanotify: its mark covers every directory.
        figures["unwatched_dirs"] = len(unwatched) if watched else 0
        deep_inode = os.lstat(os.path.join(daemon.setup.source, deep)).st_ino
        figures["deep_dir_watched"] = float(deep_inode in watched)
        figures["deep_change_s"] = mirrored_after(daemon, deep, "bench-deep-change", scale.change_timeout)
        if watched and unwatched:
            target = max(unwatched, key=lambda relative: relative.count("/"))
            figures["unwatched_change_s"] = mirrored_after(daemon, target, "bench-unwatched-change",
                                                           scale.change_timeout)
        figures["peak_rss_mib"] = measure.peak_rss_mib(daemon.pid)
        figures["daemon_cpu_s"] = measure.cpu_seconds(daemon.pid)
    lines = log_lines(daemon, ("watch", "inotify", "fanotify", "Terminating", "rror"))
    if lines:
        notes["log"] = " | ".join(lines[:4])[:600]
    if exit_status is None and ready_at is not None and daemon.name == "pirsyncd":
        figures["identical"] = float(measure.trees_identical(daemon.setup.source, daemon.setup.destination_path))
    return figures, notes


# -- W12 the mark's cost for other writers -----------------------------------------------------

def writer_round(directory: str, files: int, content: bytes) -> tuple[float, float]:
    """Create, write, close and unlink ``files`` files in ``directory``; (wall s, CPU s of this
    process: the kernel's work for the writer's calls, event generation included, is its own)."""
    names = [os.path.join(directory, f"w{number:06d}") for number in range(files)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    cpu = time.process_time()
    started = time.perf_counter()
    for name in names:
        descriptor = os.open(name, flags, 0o644)
        os.write(descriptor, content)
        os.close(descriptor)
        os.unlink(name)
    return time.perf_counter() - started, time.process_time() - cpu


def writer_phase(directory: str, scale: MarkScale, daemon: RunningDaemon | None = None) -> dict[str, float]:
    """Median round of the writer; with a daemon also its CPU time and rsync runs meanwhile."""
    content = os.urandom(100)
    before = (measure.read_activity(daemon.pid).runtime_ns, time.time()) if daemon else None
    rounds = [writer_round(directory, scale.files, content) for _ in range(scale.rounds)]
    figures = {"wall_us": measure.median([wall for wall, _cpu in rounds]) / scale.files * 1e6,
               "cpu_us": measure.median([cpu for _wall, cpu in rounds]) / scale.files * 1e6}
    if daemon is not None and before is not None:
        files = scale.files * scale.rounds
        figures["daemon_cpu_ms_per_1000"] = (measure.read_activity(daemon.pid).runtime_ns - before[0]) / files / 1e3
        figures["rsync_runs"] = len(measure.read_rsync_log(daemon.setup.rsync_log).finished_since(before[1]))
    return figures


def mark_cost(daemon_name: str, root: str, scale: MarkScale, pirsyncd_arguments: tuple[str, ...] = (),
              keep: bool = False) -> dict[str, float]:
    """W12 for one contender: the writer beside and inside the source, without the daemon (before
    it starts and after it stopped: the baseline is their median) and with it; ``*_x_none`` ratios."""
    baselines: dict[str, list[dict[str, float]]] = {"outside": [], "inside": []}
    with_daemon: dict[str, dict[str, float]] = {}

    def populate(source: str) -> None:
        """The W5 tree (100 directories), then the baseline before the daemon starts."""
        w5_populate(source)
        for place, directory in places(source).items():
            baselines[place].append(writer_phase(directory, scale))

    with daemon_session(daemon_name, root, "W12", 0.0, 300.0, populate, keep=keep,
                        pirsyncd_arguments=pirsyncd_arguments, own_source_fs=True) as session:
        for place, directory in places(session.setup.source).items():
            with_daemon[place] = writer_phase(directory, scale, session.daemon)
        session.daemon.stop()
        for place, directory in places(session.setup.source).items():
            baselines[place].append(writer_phase(directory, scale))
    figures: dict[str, float] = {"files_per_round": scale.files}
    for place in ("outside", "inside"):
        none_wall = measure.median([phase["wall_us"] for phase in baselines[place]])
        none_cpu = measure.median([phase["cpu_us"] for phase in baselines[place]])
        measured = with_daemon[place]
        figures[f"{place}_none_us"] = none_wall
        figures[f"{place}_us"] = measured["wall_us"]
        figures[f"{place}_x_none"] = measured["wall_us"] / none_wall
        figures[f"{place}_cpu_x_none"] = measured["cpu_us"] / none_cpu if none_cpu else float("nan")
        figures[f"{place}_daemon_cpu_ms_per_1000"] = measured["daemon_cpu_ms_per_1000"]
        figures[f"{place}_rsync_runs"] = measured["rsync_runs"]
    return figures


def places(source: str) -> dict[str, str]:
    """W12's writer directories: ``outside`` beside the source on its file system (made on first
    use), ``inside`` a directory of the source."""
    outside = os.path.join(os.path.dirname(source), "other-writer")
    os.makedirs(outside, exist_ok=True)
    inside = os.path.join(source, "writer")
    os.makedirs(inside, exist_ok=True)
    return {"outside": outside, "inside": inside}


# -- the table: both backends and lsyncd side by side ------------------------------------------

BACKEND_COLUMNS = ("pirsyncd/fanotify", "pirsyncd/inotify", "lsyncd")


def backend_rows(results: dict, with_floor: tuple[str, ...]) -> list[list[str]]:
    """One row per figure of each workload that ran both backends: the medians of fanotify,
    inotify and lsyncd, the floor (median of every floor run of the workload) and the ratios
    ``fan/floor``, ``ino/floor``, ``lsyncd/floor`` (figures in ``with_floor``), ``fan/lsyncd``, ``fan/ino``.

    >>> rows = backend_rows({"W3": {"pirsyncd/fanotify": [{"ready_s": 2.0}], "pirsyncd/inotify": [{"ready_s": 3.0}],
    ...                             "lsyncd": [{"ready_s": 4.0}], "floor": [{"floor_s": 2.0}]}}, ("ready_s",))
    >>> rows[0][2:6], rows[0][-2:]
    (['fanotify', 'inotify', 'lsyncd', 'floor'], ['fan/lsyncd', 'fan/ino'])
    >>> rows[1]
    ['W3', 'ready_s', '2', '3', '4', '2', '1', '1.5', '2', '0.5', '0.667']
    """
    header = ["workload", "figure", "fanotify", "inotify", "lsyncd", "floor", "fan/floor", "ino/floor",
              "lsyncd/floor", "fan/lsyncd", "fan/ino"]
    rows = [header]
    for workload, by_contender in results.items():
        if not all(by_contender.get(column) for column in BACKEND_COLUMNS[:2]):
            continue
        floor_runs = [run for key, runs in by_contender.items() if key.startswith("floor") for run in runs]
        floor = measure.median([run[next(iter(run))] for run in floor_runs if run]) if floor_runs else float("nan")
        names: list[str] = []
        for column in BACKEND_COLUMNS:
            for run in by_contender.get(column, []):
                names += [name for name in run if name not in names]
        for name in names:
            fan, ino, lsyncd = (measure.median([run[name] for run in by_contender.get(column, []) if name in run])
                                for column in BACKEND_COLUMNS)
            floored = name in with_floor and floor == floor
            rows.append([workload, name, *(number(value) for value in (fan, ino, lsyncd)),
                         number(floor if floored else None),
                         *(number(value / floor if floored else None) for value in (fan, ino, lsyncd)),
                         number(ratio(fan, lsyncd)), number(ratio(fan, ino))])
    return rows if len(rows) > 1 else []


def ratio(numerator: float, denominator: float) -> float | None:
    if numerator != numerator or denominator != denominator or not denominator:
        return None
    return numerator / denominator


def number(value: float | None) -> str:
    """As the main table writes figures: 3 significant digits, ``-`` for none."""
    if value is None or value != value:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
