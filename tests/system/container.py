"""A Debian 12 container booting real systemd, for the system tests.

The image is built once with mmdebstrap and cached as a tarball keyed by its
package list, so a repeat run only unpacks it (seconds)::

    with Container() as container:
        container.install_from_checkout(REPO_ROOT)
        container.run(["systemctl", "enable", "--now", "pirsyncd@www"])
        container.wait_for(lambda: container.unit_property("pirsyncd@www", "ActiveState") == "active")

The container is booted with ``systemd-nspawn -b`` in the background and every
command runs inside it through ``nsenter`` with a clean environment. It is
always stopped (``systemctl poweroff``, then SIGTERM and SIGKILL to the
systemd-nspawn we started) and its directory removed, also when a step fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.support.processes import child_pids
from tests.support.trees import wait_for

SUITE = "bookworm"
# procps: /bin/kill for the unit's ExecReload= (every real Debian system has it; minbase does not).
IMAGE_PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "dbus", "rsync", "python3", "python3-systemd", "openssh-client", "man-db",
    "procps",
)
CACHE_DIRECTORY = Path(os.environ.get("PIRSYNCD_IMAGE_CACHE", "/var/cache/pirsyncd-tests"))
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Paths the container mounts over: files there cannot be placed from the host side.
VOLATILE_DIRECTORIES = ("/run", "/tmp", "/proc", "/sys", "/dev")
# Where the project lands when installed from a checkout (what the .deb installs).
PYTHON_SITE = "/usr/lib/python3/dist-packages"
UNIT_DIRECTORY = "/usr/lib/systemd/system"
GENERATOR_DIRECTORY = "/usr/lib/systemd/system-generators"
LAUNCHER = """#!/usr/bin/python3
# pirsyncd launcher written by tests/system/container.py (install_from_checkout).
import sys

from pirsyncd.cli import main

sys.exit(main())
"""

T = TypeVar("T")


class ContainerError(RuntimeError):
    """The container could not be built, booted or driven; the message says what happened."""


class ContainerCommandError(subprocess.CalledProcessError):
    """A command inside the container failed; str() shows its output."""

    def __str__(self) -> str:
        return (f"{super().__str__()}\n--- stdout ---\n{self.stdout or ''}"
                f"--- stderr ---\n{self.stderr or ''}")


def image_tarball(packages: Sequence[str] = IMAGE_PACKAGES, cache_directory: Path = CACHE_DIRECTORY) -> Path:
    """The cached root file system tarball for ``packages``, built on first use.

    Built with ``mmdebstrap --variant=minbase --include=...``; a lock file keeps
    concurrent test runs from building it twice.
    """
    include = ",".join(sorted(packages))
    key = hashlib.sha256(f"{SUITE} minbase {include}".encode()).hexdigest()[:16]
    tarball = cache_directory / f"{SUITE}-{key}.tar"
    if tarball.exists():
        return tarball
    cache_directory.mkdir(parents=True, exist_ok=True)
    with (cache_directory / f"{tarball.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        partial = cache_directory / f"{SUITE}-{key}.partial-{os.getpid()}.tar"
        argv = ["mmdebstrap", "--variant=minbase", "--format=tar", f"--include={include}",
                SUITE, str(partial)]
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=1800)
            if result.returncode != 0:
                raise ContainerError(f"building the image failed: {argv}\n{result.stderr[-4000:]}")
            os.replace(partial, tarball)
        finally:
            partial.unlink(missing_ok=True)
    return tarball


def nspawn_unavailable_reason() -> str | None:
    """Why containers cannot be booted here, or None when they can."""
    if os.geteuid() != 0:
        return "system tests boot a container with systemd-nspawn and need root"
    for program in ("systemd-nspawn", "nsenter", "mmdebstrap", "tar"):
        if shutil.which(program) is None:
            return f"system tests need {program} (apt-get install systemd-container mmdebstrap util-linux)"
    return None


class Container:
    """A booted Debian container; use as a context manager."""

    def __init__(self, packages: Sequence[str] = IMAGE_PACKAGES, boot_timeout: float = 90.0,
                 nspawn_arguments: Sequence[str] = ()) -> None:
        """``nspawn_arguments``: more for systemd-nspawn, e.g. ``--capability=CAP_DAC_READ_SEARCH``."""
        self.packages = tuple(packages)
        self.nspawn_arguments = tuple(nspawn_arguments)
        self.boot_timeout = boot_timeout
        self.machine_name = f"pirsyncd-test-{uuid.uuid4().hex[:10]}"
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.leader_pid: int | None = None

    # -- life cycle ------------------------------------------------------------
    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def root(self) -> Path:
        if self.directory is None:
            raise ContainerError("the container is not started")
        return self.directory / "root"

    @property
    def console_log(self) -> Path:
        if self.directory is None:
            raise ContainerError("the container is not started")
        return self.directory / "console.log"

    def start(self) -> None:
        """Unpack the image, boot it and wait until systemd reports running or degraded."""
        tarball = image_tarball(self.packages)
        self.directory = Path(tempfile.mkdtemp(prefix="pirsyncd-container-"))
        try:
            self.root.mkdir()
            subprocess.run(["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(self.root)],
                           check=True, stdin=subprocess.DEVNULL, capture_output=True)
            with self.console_log.open("wb") as console:
                self.process = subprocess.Popen(
                    ["systemd-nspawn", "--register=no", "--keep-unit", "-q", "--console=read-only",
                     "-D", str(self.root), "-b", f"--machine={self.machine_name}", *self.nspawn_arguments],
                    stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
            self.leader_pid = self.wait_for(self._find_leader, self.boot_timeout, message="the container's systemd")
            self.wait_for(self._booted, self.boot_timeout, 0.3, message="systemctl is-system-running")
        except BaseException:
            self.stop()
            raise

    def _find_leader(self) -> int | None:
        self._check_nspawn_alive()
        assert self.process is not None
        for child in child_pids(self.process.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return child
        return None

    def _booted(self) -> bool:
        self._check_nspawn_alive()
        state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
        return state in ("running", "degraded")

    def _check_nspawn_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise ContainerError(
                f"systemd-nspawn exited with {self.process.returncode}:\n{self.console_tail()}")

    def console_tail(self, characters: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.console_log.read_text(errors="replace")[-characters:]
        return ""

    def stop(self) -> None:
        """Power the container off (escalating to SIGTERM, SIGKILL) and remove its files."""
        try:
            if self.process is not None and self.process.poll() is None:
                if self.leader_pid is not None:
                    with contextlib.suppress(Exception):
                        self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
                for escalation in (None, signal.SIGTERM, signal.SIGKILL):
                    if escalation is not None:
                        with contextlib.suppress(ProcessLookupError):
                            self.process.send_signal(escalation)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.process.wait(timeout=30)
                        break
        finally:
            self.leader_pid = None
            # systemd-nspawn leaves this per-machine directory behind on the host.
            shutil.rmtree(Path("/run/systemd/nspawn/propagate") / self.machine_name, ignore_errors=True)
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    # -- commands --------------------------------------------------------------
    def command(self, argv: Sequence[str]) -> list[str]:
        """The host argv that runs ``argv`` inside the container with a clean environment."""
        if self.leader_pid is None:
            raise ContainerError("the container is not running")
        return ["nsenter", "-t", str(self.leader_pid), "-a", "--",
                "/usr/bin/env", "-i", f"PATH={CONTAINER_PATH}", "LANG=C.UTF-8", "HOME=/root", "TERM=dumb",
                *argv]

    def run(self, argv: Sequence[str], check: bool = True, input: str | None = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container; raise ContainerCommandError on failure when ``check``."""
        result = subprocess.run(self.command(argv), input=input, capture_output=True, text=True,
                                stdin=None if input is not None else subprocess.DEVNULL, timeout=timeout)
        if check and result.returncode != 0:
            raise ContainerCommandError(result.returncode, list(argv), result.stdout, result.stderr)
        return result

    def wait_for(self, condition: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2,
                 message: str = "condition") -> T:
        """Call ``condition`` until it returns something truthy and return that
        (:func:`tests.support.trees.wait_for`); after ``timeout`` seconds raise TimeoutError naming
        ``message`` and showing the end of the console log."""
        try:
            return wait_for(condition, timeout, f"timed out waiting for {message}", interval, error=TimeoutError)
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n--- console ---\n{self.console_tail(1500)}") from None

    def write_file(self, path: str, text: str, mode: int = 0o644, owner: str | None = None) -> None:
        """Create or replace ``path`` (parents included) inside the container."""
        parent = os.path.dirname(path)
        self.run(["mkdir", "-p", "--", parent])
        self.run(["tee", "--", path], input=text)
        self.run(["chmod", f"{mode:o}", "--", path])
        if owner is not None:
            self.run(["chown", owner, "--", path])

    def read_file(self, path: str) -> str:
        return self.run(["cat", "--", path]).stdout

    def host_path(self, path: str) -> Path:
        """Where the container's ``path`` is on the host (not for /run, /tmp and other mounts)."""
        if not path.startswith("/") or any(path == volatile or path.startswith(volatile + "/")
                                           for volatile in VOLATILE_DIRECTORIES):
            raise ContainerError(f"{path} is not reachable from the host side")
        return self.root / path.lstrip("/")

    def copy_in(self, source: Path, path: str, mode: int | None = None) -> None:
        """Copy a host file or directory tree to ``path`` inside the container."""
        target = self.host_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(source, target)
            if mode is not None:
                target.chmod(mode)

    # -- systemd ---------------------------------------------------------------
    def journal(self, unit: str, *matches: str, since_cursor: str | None = None) -> list[dict[str, Any]]:
        """The journal entries of ``unit`` (``journalctl -o json -u UNIT [MATCHES]``)."""
        argv = ["journalctl", "--no-pager", "-o", "json", "-u", unit]
        if since_cursor is not None:
            argv.append(f"--after-cursor={since_cursor}")
        output = self.run([*argv, *matches], check=False).stdout
        return [json.loads(line) for line in output.splitlines() if line.strip()]

    def journal_cursor(self) -> str | None:
        """The cursor of the newest journal entry, to read only what comes after it."""
        output = self.run(["journalctl", "--no-pager", "-o", "json", "-n", "1"], check=False).stdout
        lines = output.strip().splitlines()
        return json.loads(lines[-1])["__CURSOR"] if lines else None

    def unit_property(self, unit: str, name: str) -> str:
        return self.run(["systemctl", "show", "--value", "-p", name, unit]).stdout.strip()

    def unit_properties(self, unit: str, *names: str) -> dict[str, str]:
        argv = ["systemctl", "show", unit, *(f"--property={name}" for name in names)]
        lines = self.run(argv).stdout.splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    # -- installing pirsyncd -------------------------------------------------
    def install_deb(self, package: Path) -> None:
        """Install a built pirsyncd .deb as a user would (``apt-get install ./pirsyncd.deb``)."""
        self.copy_in(package, f"/root/{package.name}")
        argv = ["apt-get", "install", "-y", "--no-install-recommends", f"/root/{package.name}"]
        environment = ["env", "DEBIAN_FRONTEND=noninteractive"]
        if self.run([*environment, *argv], check=False, timeout=600).returncode != 0:
            # The image ships without package lists; a dependency may need them.
            self.run(["apt-get", "update"], timeout=600)
            self.run([*environment, *argv], timeout=600)
        self.run(["systemctl", "daemon-reload"])

    def install_from_checkout(self, repo_root: Path) -> None:
        """Install the work tree the way the package does, without building it.

        The package, inotify_simple (from the project's virtualenv), the units,
        the generator and the sysusers file go to their system paths; a small
        launcher becomes /usr/bin/pirsyncd.
        """
        self.copy_in(repo_root / "pirsyncd", f"{PYTHON_SITE}/pirsyncd")
        self.copy_in(find_inotify_simple(repo_root), f"{PYTHON_SITE}/inotify_simple.py")
        for module in find_python_prctl():  # what the .deb's Depends: python3-prctl brings
            self.copy_in(module, f"{PYTHON_SITE}/{module.name}")
        systemd_directory = repo_root / "systemd"
        for unit in ("pirsyncd@.service", "pirsyncd.target"):
            self.copy_in(systemd_directory / unit, f"{UNIT_DIRECTORY}/{unit}", 0o644)
        self.copy_in(systemd_directory / "pirsyncd-generator",
                     f"{GENERATOR_DIRECTORY}/pirsyncd-generator", 0o755)
        self.copy_in(systemd_directory / "pirsyncd.sysusers.conf", "/usr/lib/sysusers.d/pirsyncd.conf", 0o644)
        self.host_path("/usr/bin/pirsyncd").write_text(LAUNCHER)
        self.host_path("/usr/bin/pirsyncd").chmod(0o755)
        self.run(["mkdir", "-p", "/etc/pirsyncd"])
        self.run(["systemd-sysusers"])
        self.run(["systemctl", "daemon-reload"])
        # The package enables the target so that enabled instances start at boot.
        self.run(["systemctl", "enable", "pirsyncd.target"])

    def install_pirsyncd(self, repo_root: Path) -> str:
        """install_deb when $PIRSYNCD_DEB names a package, else install_from_checkout; returns which."""
        package = os.environ.get("PIRSYNCD_DEB")
        if package:
            self.install_deb(Path(package))
            return f"deb {package}"
        self.install_from_checkout(repo_root)
        return f"checkout {repo_root}"


def find_python_prctl() -> list[Path]:
    """python-prctl's two files as this machine's Debian python3-prctl installed them (the same
    Debian release and Python as the container's)."""
    import _prctl
    import prctl
    return [Path(prctl.__file__), Path(_prctl.__file__)]


def find_inotify_simple(repo_root: Path) -> Path:
    """inotify_simple.py from the project's virtualenv (the version the tests pin)."""
    candidates = sorted((repo_root / ".venv" / "lib").glob("python3*/site-packages/inotify_simple.py"))
    if not candidates:
        import importlib.util

        spec = importlib.util.find_spec("inotify_simple")
        if spec is None or spec.origin is None:
            raise ContainerError("inotify_simple is not installed: pip install inotify_simple")
        return Path(spec.origin)
    return candidates[-1]


@contextlib.contextmanager
def booted_container(repo_root: Path) -> Iterator[Container]:
    """A booted container with pirsyncd installed (see Container.install_pirsyncd)."""
    with Container() as container:
        container.install_pirsyncd(repo_root)
        yield container
