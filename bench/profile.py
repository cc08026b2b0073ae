"""Profile pirsyncd's startup (W3) with py-spy: where does the time to the first in-sync go?

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile.py [--quick] [--root /dev/shm] [--out /tmp/pirsyncd-profile]

Builds the W3 tree, runs ``py-spy record --format raw -- python -m pirsyncd ...`` (rsync is the
plain wrapper, not profiled), stops pirsyncd with SIGTERM once its status file says in-sync, then
prints the functions with the most samples, self and inclusive. The collapsed stacks stay in --out
(feed them to flamegraph.pl or speedscope).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import workloads
from bench.daemons import REPO_ROOT, VENV_PYTHON, Setup, byte_compile_pirsyncd, pirsyncd_command
from tests.support.daemon import read_status_file
from tests.support.trees import wait_for


def top_functions(collapsed_path: str, count: int = 25
                  ) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """(self, inclusive, total samples) from py-spy's collapsed ``frame;frame;frame N`` lines."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(collapsed_path, encoding="utf-8", errors="replace") as collapsed:
        for line in collapsed:
            stack, _, samples_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            samples = int(samples_text)
            frames = stack.split(";")
            total += samples
            own[frames[-1]] += samples
            for frame in set(frames):
                inclusive[frame] += samples
    return own.most_common(count), inclusive.most_common(count), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--root", default="/dev/shm")
    parser.add_argument("--out", default="/tmp/pirsyncd-profile")
    arguments = parser.parse_args()
    py_spy = shutil.which("py-spy", path=os.path.dirname(VENV_PYTHON)) or shutil.which("py-spy")
    if py_spy is None:
        print("profile.py: py-spy not found; .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    os.makedirs(arguments.out, exist_ok=True)
    byte_compile_pirsyncd()  # as installed: the profile shows no compiling of our modules
    scale = workloads.QUICK if arguments.quick else workloads.FULL
    run_dir = tempfile.mkdtemp(prefix="pirsyncd-bench-profile-", dir=arguments.root)
    try:
        source, destination = os.path.join(run_dir, "src"), os.path.join(run_dir, "dst")
        os.mkdir(source)
        os.mkdir(destination)
        workloads.w3_populate(scale)(source)
        wrapper = os.path.join(run_dir, "rsync-wrapper")
        shutil.copy2(workloads.WRAPPER_TEMPLATE, wrapper)
        setup = Setup(run_dir, source, destination, wrapper, wrapper + ".log",
                      os.path.join(run_dir, "status.json"), 0.0)
        collapsed = os.path.join(arguments.out, "w3-startup.collapsed")
        started = time.time()
        with open(os.path.join(arguments.out, "py-spy.err"), "wb") as profiler_errors:
            profiler = subprocess.Popen([py_spy, "record", "--format", "raw", "--rate", "250", "--output",
                                         collapsed, "--", *pirsyncd_command(setup)], cwd=REPO_ROOT,
                                        stdout=subprocess.DEVNULL, stderr=profiler_errors)

        def in_sync() -> bool:
            if profiler.poll() is not None:
                raise RuntimeError(f"py-spy exited with status {profiler.returncode}")
            return read_status_file(setup.status_file).get("state") == "in-sync"

        try:
            wait_for(in_sync, scale.timeout, "pirsyncd did not reach in-sync", poll=0.01, error=RuntimeError)
        except RuntimeError as error:
            print(f"profile.py: {error}", file=sys.stderr)
        print(f"in-sync after {time.time() - started:.2f} s (under py-spy, so slower than unprofiled)")
        status = read_status_file(setup.status_file)
        if status.get("pid"):
            os.kill(int(status["pid"]), signal.SIGTERM)
        profiler.wait(120)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    own, inclusive, total = top_functions(collapsed)
    print(f"{total} samples; top self:")
    for frame, samples in own:
        print(f"  {100 * samples / total:5.1f}%  {frame}")
    print("top inclusive:")
    for frame, samples in inclusive:
        print(f"  {100 * samples / total:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
