"""What ``pirsyncd audit`` costs on the W3 tree (20,000 dirs, 100,000 files of 100 bytes), against
plain rsync dry runs of the same tree: ``rsync -an --delete`` (metadata) and ``rsync -anc --delete``
(content), each the median of ``--repeat`` runs on an in-sync mirror (so every run reads every
inode, and with checksums every byte, of both trees)::

    .venv/bin/python bench/audit.py --repeat 3            # W3 under /dev/shm
    .venv/bin/python bench/audit.py --quick --repeat 1    # smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.workloads import FULL, QUICK, build_many_dirs
from tests.support.daemon import pirsyncd_command

REAL_RSYNC = shutil.which("rsync") or "rsync"


def timed(argv: list[str], expect: int = 0) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, check=False, env={**os.environ, "LC_ALL": "C"})
    seconds = time.monotonic() - started
    if result.returncode != expect:
        raise SystemExit(f"{argv[:4]}... exited {result.returncode}: {result.stderr.decode(errors='replace')[-500:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick W3 tree (seconds)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--root", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    arguments = parser.parse_args()
    scale = QUICK if arguments.quick else FULL
    work = tempfile.mkdtemp(prefix="pirsyncd-audit-bench.", dir=arguments.root)
    try:
        source, destination = os.path.join(work, "source"), os.path.join(work, "mirror")
        os.mkdir(source)
        build_many_dirs(source, scale.w3_top_dirs, scale.w3_subdirs, scale.w3_files_per_dir)
        subprocess.run([REAL_RSYNC, "-a", source + "/", destination + "/"], check=True)
        place = ["--source", source, "--destination", destination]
        runs = {
            "rsync -an --delete": [REAL_RSYNC, "-an", "--delete", source + "/", destination + "/"],
            "pirsyncd audit": pirsyncd_command("audit", *place),
            "rsync -anc --delete": [REAL_RSYNC, "-anc", "--delete", source + "/", destination + "/"],
            "pirsyncd audit --content": pirsyncd_command("audit", "--content", *place),
            "pirsyncd audit --content=1/7": pirsyncd_command("audit", "--content=1/7", *place),
        }
        print(f"W3{' quick' if arguments.quick else ''}: {scale.w3_top_dirs * (1 + scale.w3_subdirs)} dirs, "
              f"{scale.w3_top_dirs * (1 + scale.w3_subdirs) * scale.w3_files_per_dir} files, in {work}; "
              f"median of {arguments.repeat}")
        for label, argv in runs.items():
            seconds = statistics.median(timed(argv) for _ in range(arguments.repeat))
            print(f"  {label:<30} {seconds:7.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
