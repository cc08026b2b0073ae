"""The shape of the package, checked: dependencies point one way, the pure core touches
no OS machinery, one module starts subprocesses, and the exit statuses agree everywhere."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pirsyncd import exitcodes

PACKAGE = Path(__file__).resolve().parents[2] / "pirsyncd"
MAN8 = PACKAGE.parent / "docs" / "pirsyncd.8.rst"
PURE = ("options", "config", "filters", "events", "batch", "pending", "rsync", "plan", "policy", "failing",
        "destination", "exitcodes", "hardlinks")
OS_MACHINERY = {"select", "selectors", "subprocess", "socket", "signal", "inotify_simple"}


def imports_of(module: str) -> set[str]:
    """Every module a pirsyncd module imports, also under TYPE_CHECKING and inside functions."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "pirsyncd":
                found.update(f"pirsyncd.{alias.name}" for alias in node.names)
    return found


def package_modules() -> list[str]:
    return sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def test_no_import_cycles() -> None:
    graph = {module: {name.removeprefix("pirsyncd.") for name in imports_of(module)
                      if name.startswith("pirsyncd.") and not name.startswith("pirsyncd._vendor")}
             for module in package_modules()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting[visiting.index(module):], module])}"
        visiting.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


@pytest.mark.parametrize("module", PURE)
def test_the_pure_core_touches_no_os_machinery(module: str) -> None:
    used = {name.split(".")[0] for name in imports_of(module)} & OS_MACHINERY
    assert not used, f"pirsyncd/{module}.py imports {sorted(used)}: keep it pure, move that to an edge"


def test_only_the_runner_starts_subprocesses_and_only_the_watcher_uses_inotify() -> None:
    for module in package_modules():
        names = {name.split(".")[0] for name in imports_of(module)}
        if module != "runner":
            assert "subprocess" not in names, f"pirsyncd/{module}.py starts a subprocess: use pirsyncd.runner"
        if module != "watcher":
            assert "inotify_simple" not in names, f"pirsyncd/{module}.py uses inotify: go through the watcher"


def test_modules_stay_small_and_the_service_is_the_loop_alone() -> None:
    for module in package_modules():
        lines = len((PACKAGE / f"{module}.py").read_text().splitlines())
        assert lines <= 400, f"pirsyncd/{module}.py has {lines} lines: split it"
    assert len((PACKAGE / "service.py").read_text().splitlines()) < 200


def _man_exit_statuses() -> dict[int, str]:
    text = MAN8.read_text()
    section = text.split("EXIT STATUS\n===========\n", 1)[1].split("\n\n", 2)
    body = "\n".join(section[:2]) if len(section) > 1 else section[0]
    entries = re.findall(r"^\*\*(\d+)\*\*\n((?:    .*\n?)+)", body, re.MULTILINE)
    return {int(code): " ".join(line.strip() for line in meaning.splitlines()) for code, meaning in entries}


def test_the_man_page_lists_every_exit_status_with_its_meaning() -> None:
    documented = _man_exit_statuses()
    assert sorted(documented) == sorted(status.code for status in exitcodes.STATUSES)
    for status in exitcodes.STATUSES:
        assert documented[status.code].replace("**", "").rstrip(".").lower() == status.meaning.lower(), (
            f"pirsyncd.8.rst: exit status {status.code} must say: {status.meaning}")


def test_help_names_every_exit_status() -> None:
    output = subprocess.run([sys.executable, "-m", "pirsyncd", "--help"], capture_output=True, text=True,
                            cwd=PACKAGE.parent, check=True).stdout
    flat = " ".join(output.split())
    for status in exitcodes.STATUSES:
        assert f" {status.code} " in flat, f"--help does not name exit status {status.code}"
