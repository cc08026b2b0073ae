"""The shape of the package, checked: each subpackage imports only the packages below it
(the README's diagram, as folders), there are no import cycles, the pure core touches no OS
machinery, one module starts subprocesses, and the exit statuses agree everywhere."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pirsyncd.config import exitcodes

PACKAGE = Path(__file__).resolve().parents[2] / "pirsyncd"
MAN8 = PACKAGE.parent / "docs" / "pirsyncd.8.rst"
# Which subpackages each one may import (besides itself). The modules at the top (cli, service,
# instance, policy) may import any of them; none of them imports the top.
MAY_IMPORT = {
    "config": set(),
    "edges": {"config"},
    "source": {"config", "edges"},
    "replica": {"config", "edges", "source"},
    "restart": {"config", "edges", "source", "replica"},
    "ops": {"config", "edges", "source", "replica"},
}
PURE = ("config.options", "config.filters", "config.parse", "config.values", "config.destination", "config.exitcodes",
        "source.events", "source.fanotify_events", "source.fanotify_changes", "source.hardlinks",
        "replica.batch", "replica.pending", "replica.keptaside", "replica.progress", "replica.itemize",
        "replica.rsync", "replica.plan", "replica.policy", "replica.failing", "ops.drift", "policy")
OS_MACHINERY = {"select", "selectors", "subprocess", "socket", "signal", "inotify_simple", "ctypes"}
# The raw calls of fanotify(7) and of file handles: made through the binding alone.
FANOTIFY_CALLS = {"fanotify_init", "fanotify_mark", "name_to_handle_at", "open_by_handle_at"}
# Who may load libc with ctypes: the binding, the watcher (for inotify_simple) and the runner.
CTYPES_USERS = {"source.fanotify", "source.watcher", "edges.runner"}


def package_modules() -> list[str]:
    """Every module of pirsyncd by dotted name below it: ``cli``, ``source.watcher``, ..."""
    return sorted(".".join(path.relative_to(PACKAGE).with_suffix("").parts) for path in PACKAGE.rglob("*.py")
                  if path.stem != "__init__" and "_vendor" not in path.parts)


def imports_of(module: str) -> set[str]:
    """Every module a pirsyncd module imports, also under TYPE_CHECKING and inside functions,
    as dotted names (``pirsyncd.replica.rsync``; ``from pirsyncd.config import exitcodes``
    gives ``pirsyncd.config.exitcodes``)."""
    tree = ast.parse((PACKAGE / f"{module.replace('.', '/')}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module.startswith("pirsyncd"):
                found.update(f"{node.module}.{alias.name}" for alias in node.names
                             if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).with_suffix(".py")
                             .exists())
    return found


def own_imports(module: str) -> set[str]:
    """The pirsyncd modules (dotted, below the package) a module imports."""
    modules = set(package_modules())
    return {name.removeprefix("pirsyncd.") for name in imports_of(module)} & modules


def test_each_subpackage_imports_only_the_packages_below_it() -> None:
    assert {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()} - {"_vendor"} == set(MAY_IMPORT)
    for module in package_modules():
        package = module.split(".")[0] if "." in module else None
        for imported in own_imports(module):
            target = imported.split(".")[0] if "." in imported else None
            if package is None or target == package:
                continue  # the top imports anything; a package imports itself
            assert target is not None, f"pirsyncd/{module} imports {imported}: packages never import the top"
            assert target in MAY_IMPORT[package], (
                f"pirsyncd/{module} imports pirsyncd.{imported}: {package}/ may import only "
                f"{sorted(MAY_IMPORT[package]) or 'nothing else'}")


def test_no_import_cycles() -> None:
    graph = {module: own_imports(module) for module in package_modules()}
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
    assert not used, f"pirsyncd/{module} imports {sorted(used)}: keep it pure, move that to an edge"


def test_only_the_runner_starts_subprocesses_and_only_the_watcher_uses_inotify() -> None:
    for module in package_modules():
        names = {name.split(".")[0] for name in imports_of(module)}
        if module != "edges.runner":
            assert "subprocess" not in names, f"pirsyncd/{module} starts a subprocess: use pirsyncd.edges.runner"
        if module != "source.watcher":
            assert "inotify_simple" not in names, f"pirsyncd/{module} uses inotify: go through the watcher"


def test_only_the_fanotify_binding_makes_the_raw_fanotify_and_file_handle_calls() -> None:
    """Others call the binding's wrappers by name (``fanotify.open_by_handle_at(...)`` is fine in
    the binding's users); what they may not do is reach libc for them: load it with ctypes or
    look those symbols up on a library object."""
    for module in package_modules():
        names = {name.split(".")[0] for name in imports_of(module)}
        if module not in CTYPES_USERS:
            assert "ctypes" not in names, f"pirsyncd/{module} loads C code: go through pirsyncd.source.fanotify"
        if module == "source.fanotify":
            continue
        tree = ast.parse((PACKAGE / f"{module.replace('.', '/')}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in FANOTIFY_CALLS:
                base = node.value
                assert isinstance(base, ast.Name) and base.id == "fanotify", (
                    f"pirsyncd/{module}:{node.lineno} calls {node.attr} on {ast.unparse(base)}: "
                    f"use pirsyncd.source.fanotify")


def test_the_service_is_the_loop_alone() -> None:
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
