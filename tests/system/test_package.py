"""The .deb's whole life on a clean Debian 12 booting real systemd.

Builds the package twice with scripts/build-deb (the checkout as it is, and a
copy whose debian/changelog carries a higher version), then in one container:
``apt-get install ./pirsyncd_*.deb``; write /etc/pirsyncd/www.conf;
``systemctl enable --now pirsyncd@www``; the mirror, ``systemctl status``,
``journalctl -u`` and ``man`` work; the newer package installed over it restarts
the running instance, which keeps mirroring; ``apt-get remove`` stops it;
``apt-get purge`` leaves nothing of ours behind.

Set PIRSYNCD_DEB to an already built .deb to use it as the first version.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.container import Container, nspawn_unavailable_reason

pytestmark = pytest.mark.system

REPO_ROOT = Path(__file__).resolve().parents[2]
UPGRADE_VERSION_SUFFIX = "+systemtest1"
SOURCE = "/srv/www"
DESTINATION = "/var/backups/www"
WWW_CONF = f"""[sync]
source = {SOURCE}
destination = {DESTINATION}
delay = 0.2
"""
# Not the package's: the .debs the test copied in, the mirrored data, and the
# formatted pages `man` caches (man-db's own cache, expired by man-db).
NOT_OURS = ("/root/", DESTINATION, "/var/cache/man/")


def build_deb(tree: Path, output_directory: Path) -> Path:
    """Run scripts/build-deb on ``tree``; return the .deb it produced."""
    result = subprocess.run([str(tree / "scripts" / "build-deb"), str(output_directory)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"scripts/build-deb failed:\n{output}"
    (package,) = output_directory.glob("pirsyncd_*_all.deb")
    return package


def copy_with_newer_version(tree: Path, destination: Path) -> Path:
    """A copy of ``tree`` whose debian/changelog has a newer entry on top."""
    shutil.copytree(tree, destination, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "dist", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
        ".pytest_cache"))
    changelog = destination / "debian" / "changelog"
    text = changelog.read_text(encoding="utf-8")
    version = text.split("(", 1)[1].split(")", 1)[0]
    maintainer = text.split("\n -- ", 1)[1].split(">", 1)[0] + ">"
    entry = (f"pirsyncd ({version}{UPGRADE_VERSION_SUFFIX}) unstable; urgency=medium\n\n"
             "  * Upgrade test build.\n\n"
             f" -- {maintainer}  {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\n\n")
    changelog.write_text(entry + text, encoding="utf-8")
    return destination


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(first, newer) .deb files."""
    reason = nspawn_unavailable_reason()
    if reason:
        pytest.skip(reason)
    for program in ("dpkg-buildpackage", "dh", "pybuild", "rst2man", "lintian"):
        if shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.skip(f"building the .deb needs {program}: apt-get install debhelper dh-python "
                        "python3-all python3-setuptools python3-docutils lintian")
    scratch = tmp_path_factory.mktemp("debs")
    first = Path(os.environ["PIRSYNCD_DEB"]) if os.environ.get("PIRSYNCD_DEB") else build_deb(
        REPO_ROOT, scratch / "first")
    newer_tree = copy_with_newer_version(REPO_ROOT, scratch / "newer-tree")
    newer = build_deb(newer_tree, scratch / "newer")
    return first, newer


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    reason = nspawn_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with Container() as booted:
        yield booted


def apt_get(container: Container, *arguments: str) -> None:
    container.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", *arguments], timeout=300)


def installed_version(container: Container) -> str:
    return container.run(["dpkg-query", "-W", "-f=${Version}", "pirsyncd"]).stdout


def mirrored(container: Container, name: str, content: str) -> bool:
    result = container.run(["cat", "--", f"{DESTINATION}/{name}"], check=False)
    return result.returncode == 0 and result.stdout == content


def wait_until_mirrored(container: Container, name: str, content: str, timeout: float = 30.0) -> None:
    container.write_file(f"{SOURCE}/{name}", content)
    container.wait_for(lambda: mirrored(container, name, content), timeout,
                       message=f"{SOURCE}/{name} at {DESTINATION}")


def wait_until_running(container: Container, unit: str) -> str:
    """Wait for ``unit`` to be active with a main process; return its MainPID."""
    def main_pid() -> str | None:
        properties = container.unit_properties(unit, "ActiveState", "MainPID")
        if properties.get("ActiveState") == "active" and properties.get("MainPID", "0") != "0":
            return properties["MainPID"]
        if properties.get("ActiveState") == "failed":
            journal = container.run(["journalctl", "--no-pager", "-u", unit], check=False).stdout
            pytest.fail(f"{unit} failed:\n{journal[-3000:]}")
        return None
    return container.wait_for(main_pid, 60, message=f"{unit} active")


def pirsyncd_processes(container: Container) -> list[str]:
    """The command lines of processes running as the pirsyncd user (minbase has no pgrep)."""
    script = ('for process in /proc/[0-9]*; do '
              '[ "$(stat -c %U "$process" 2>/dev/null)" = pirsyncd ] '
              '&& tr "\\0" " " < "$process/cmdline" && echo; '
              'done; true')
    return [line for line in container.run(["sh", "-c", script]).stdout.splitlines() if line.strip()]


def leftovers(container: Container) -> list[str]:
    """Every path named after pirsyncd, in the root file system and in /run."""
    script = ("find / -xdev \\( -path /proc -o -path /sys \\) -prune -o -name '*pirsyncd*' -print; "
              "find /run -name '*pirsyncd*' -print")
    paths = container.run(["sh", "-c", script]).stdout.split()
    return [path for path in paths if not path.startswith(NOT_OURS)]


def test_install_upgrade_remove_purge(container: Container, packages: tuple[Path, Path]) -> None:
    first, newer = packages

    # -- install: nothing runs until an instance is enabled ------------------------
    container.install_deb(first)
    assert container.run(["test", "-x", "/usr/bin/pirsyncd"], check=False).returncode == 0
    assert container.run(["getent", "passwd", "pirsyncd"], check=False).returncode == 0, "no pirsyncd user"
    assert container.unit_property("pirsyncd.target", "UnitFileState") == "enabled"
    assert container.run(["test", "-f", "/etc/pirsyncd/example.conf"], check=False).returncode == 0
    assert pirsyncd_processes(container) == [], "something runs before an instance is enabled"

    # -- the first instance ----------------------------------------------------------
    container.write_file(f"{SOURCE}/index.html", "hello\n")
    container.run(["install", "-d", "-o", "pirsyncd", "-g", "pirsyncd", DESTINATION])
    container.write_file("/etc/pirsyncd/www.conf", WWW_CONF)
    container.run(["pirsyncd", "--check", "www"])
    # bash completion, as installed: the instance name completes (example.conf is no instance).
    completed = container.run(["bash", "-c", "source /usr/share/bash-completion/completions/pirsyncd; "
                               "COMP_WORDS=(pirsyncd status w); COMP_CWORD=2; _pirsyncd; echo \"${COMPREPLY[@]}\""])
    assert completed.stdout.split() == ["www"], completed.stdout
    # The generator writes the instance's ReadWritePaths= from www.conf.
    container.run(["systemctl", "daemon-reload"])
    container.run(["systemctl", "enable", "--now", "pirsyncd@www"])
    first_pid = wait_until_running(container, "pirsyncd@www")
    container.wait_for(lambda: mirrored(container, "index.html", "hello\n"), 60, message="the initial sync")
    wait_until_mirrored(container, "new.txt", "made after start\n")

    status = container.run(["systemctl", "status", "--no-pager", "pirsyncd@www"], check=False)
    assert status.returncode == 0, status.stdout
    assert "active (running)" in status.stdout
    journal = container.run(["journalctl", "--no-pager", "-u", "pirsyncd@www"]).stdout
    assert "pirsyncd" in journal and "-- No entries --" not in journal
    for page in (["8", "pirsyncd"], ["5", "pirsyncd.conf"]):
        manual = container.run(["man", "-P", "cat", *page])
        assert "pirsyncd" in manual.stdout and "SYNOPSIS" in manual.stdout

    # -- upgrade: the running instance restarts on the new code --------------------
    container.install_deb(newer)
    assert installed_version(container).endswith(UPGRADE_VERSION_SUFFIX)
    new_pid = wait_until_running(container, "pirsyncd@www")
    assert new_pid != first_pid, "pirsyncd@www was not restarted by the upgrade"
    wait_until_mirrored(container, "after-upgrade.txt", "still mirroring\n")

    # -- remove: instances stop, configuration stays ---------------------------------
    apt_get(container, "remove", "pirsyncd")
    assert container.unit_property("pirsyncd@www", "ActiveState") in ("inactive", "")
    assert pirsyncd_processes(container) == [], "an instance still runs after removal"
    assert container.run(["test", "-f", "/etc/pirsyncd/www.conf"], check=False).returncode == 0

    # -- purge: nothing of ours left; the system user stays on purpose ---------------
    apt_get(container, "purge", "pirsyncd")
    container.run(["systemctl", "daemon-reload"])
    assert leftovers(container) == []
    assert container.run(["dpkg-query", "-W", "pirsyncd"], check=False).returncode != 0
    assert container.run(["getent", "passwd", "pirsyncd"], check=False).returncode == 0
