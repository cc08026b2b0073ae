"""The rsyncs the tests run, and which deletion path each test runs on.

pirsyncd deletes in a batch in one of two ways (``[rsync] deletion_mode``): ``missing-args`` (rsync
``--delete-missing-args``, broken with ``--files-from`` in Debian 12's rsync 3.2.7) and ``parents``
(re-check the parent directory of a deleted path). The integration tests run on both:

- ``parents`` with the system rsync (the first ``rsync`` on PATH: Debian's own, what users run);
- ``missing-args`` with :func:`missing_args_rsync`: the system rsync if it passes the probe, else the
  fixed build ``scripts/setup --tests`` unpacks into ``.cache/rsync-fixed/``.

The fixture in ``tests/integration/conftest.py`` picks a :class:`DeletionPath` per test and makes it
current with :func:`using`; the shared harness (``tests.support.daemon.Daemon``, the remote tests'
own daemon, :class:`tests.support.servers.RsyncDaemon`) reads :func:`current`. A daemon on a path
gets ``--deletion-mode NAME`` and a PATH whose first entry holds that path's rsync, so ``rsync`` by
name (pirsyncd's default ``rsync_binary``, and the tests' fake rsync wrappers) is that rsync.

    >>> missing_args_rsync()                                  # doctest: +SKIP
    '/work/main/.cache/rsync-fixed/usr/bin/rsync'
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SYSTEM_RSYNC = shutil.which("rsync") or "/usr/bin/rsync"
FIXED_RSYNC = str(REPO / ".cache" / "rsync-fixed" / "usr" / "bin" / "rsync")
MISSING_ARGS = "missing-args"
PARENTS = "parents"
DELETION_PATHS = (MISSING_ARGS, PARENTS)


@functools.cache
def rsync_version(binary: str) -> str:
    """The first line of ``binary --version`` (``rsync  version 3.2.7  protocol version 32``), or why not."""
    try:
        result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"not runnable: {error}"
    lines = result.stdout.splitlines()
    return " ".join(lines[0].split()) if result.returncode == 0 and lines else f"--version exited {result.returncode}"


@functools.cache
def handles_delete_missing_args(binary: str) -> bool:
    """Whether ``binary`` deletes missing ``--files-from`` entries, a file and a directory, with exit 0.

    The same probe as pirsyncd's: ``printf 'present\\0ghost\\0ghost-dir\\0' | rsync -a --files-from=-
    --from0 --delete-missing-args --force SRC/ DST/`` (Debian 12's 3.2.7 says "invalid file mode 00").
    """
    with tempfile.TemporaryDirectory(prefix="pirsyncd-test-probe-") as scratch:
        source, target = Path(scratch, "src"), Path(scratch, "dst")
        source.mkdir()
        (target / "ghost-dir").mkdir(parents=True)
        (source / "present").touch()
        (target / "ghost").touch()
        try:
            result = subprocess.run([binary, "-a", "--files-from=-", "--from0", "--delete-missing-args", "--force",
                                     f"{source}/", f"{target}/"], input=b"present\0ghost\0ghost-dir\0",
                                    capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return (result.returncode == 0 and (target / "present").exists()
                and not os.path.lexists(target / "ghost") and not os.path.lexists(target / "ghost-dir"))


def missing_args_rsync() -> str | None:
    """An rsync that handles ``--delete-missing-args``: the system one, else the fixed one, else None."""
    for binary in (SYSTEM_RSYNC, FIXED_RSYNC):
        if os.access(binary, os.X_OK) and handles_delete_missing_args(binary):
            return binary
    return None


def missing_args_rsync_problem() -> str:
    """Why there is no :func:`missing_args_rsync`, with the fix."""
    fixed = f"{FIXED_RSYNC} fails it" if os.access(FIXED_RSYNC, os.X_OK) else f"{FIXED_RSYNC} does not exist"
    return (f"no rsync handles --delete-missing-args: the system rsync {SYSTEM_RSYNC} fails the probe and "
            f"{fixed}; run: bash scripts/setup --tests")


@dataclasses.dataclass(frozen=True)
class DeletionPath:
    """One deletion path: pirsyncd's ``deletion_mode`` and the rsync (sender and receiver) it runs with."""

    name: str
    rsync: str

    @property
    def bin_directory(self) -> str:
        """The directory that goes first in PATH, so that ``rsync`` by name is :attr:`rsync`."""
        return os.path.dirname(self.rsync)

    def daemon_arguments(self) -> list[str]:
        """pirsyncd arguments for this path: ``['--deletion-mode', 'parents']``."""
        return ["--deletion-mode", self.name]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with :attr:`bin_directory` first in PATH."""
        environment = dict(base)
        environment["PATH"] = os.pathsep.join([self.bin_directory, base.get("PATH") or os.defpath])
        return environment

    def ssh_receiver_arguments(self) -> list[str]:
        """pirsyncd arguments that make the remote (receiving) rsync over ssh this path's rsync.

        Empty for the system rsync (the remote login finds it in PATH). Quoted twice: pirsyncd splits
        rsync_flags like a shell, and rsync hands ``--rsync-path`` to the remote shell.
        """
        if self.rsync == SYSTEM_RSYNC:
            return []
        return [f"--rsync-flags=--rsync-path={shlex.quote(shlex.quote(self.rsync))}"]


def deletion_path(name: str) -> DeletionPath | None:
    """The :class:`DeletionPath` called ``name``, or None when no rsync for it is available."""
    if name == PARENTS:
        return DeletionPath(PARENTS, SYSTEM_RSYNC)
    if name == MISSING_ARGS:
        binary = missing_args_rsync()
        return None if binary is None else DeletionPath(MISSING_ARGS, binary)
    raise ValueError(f"unknown deletion path {name!r}; choose one of {', '.join(DELETION_PATHS)}")


_current: DeletionPath | None = None


def current() -> DeletionPath | None:
    """The deletion path of the running test, or None (pirsyncd decides: deletion_mode auto)."""
    return _current


def receiver_rsync() -> str:
    """The rsync a test's rsync daemon or remote side should run: the current path's, else the system's."""
    return SYSTEM_RSYNC if _current is None else _current.rsync


@contextlib.contextmanager
def using(path: DeletionPath | None) -> Iterator[DeletionPath | None]:
    """Make ``path`` :func:`current` for the duration of the block."""
    global _current
    previous, _current = _current, path
    try:
        yield path
    finally:
        _current = previous


def describe() -> list[str]:
    """Lines for pytest's report header: which rsync each deletion path runs."""
    system_passes = handles_delete_missing_args(SYSTEM_RSYNC)
    lines = [f"system rsync: {rsync_version(SYSTEM_RSYNC)} ({SYSTEM_RSYNC}); handles --delete-missing-args: "
             f"{'yes' if system_passes else 'no'}"]
    binary = missing_args_rsync()
    if binary is None:
        lines.append(f"missing-args path: none ({missing_args_rsync_problem()})")
    else:
        lines.append(f"missing-args path: {rsync_version(binary)} ({binary})")
    lines.append(f"parents path: {rsync_version(SYSTEM_RSYNC)} ({SYSTEM_RSYNC})")
    return lines
