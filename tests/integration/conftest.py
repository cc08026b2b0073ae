"""Every integration test runs on both deletion paths, ids ``missing-args`` and ``parents``.

    .venv/bin/python -m pytest tests/integration -k parents        # one path only

A test marked ``auto_deletion_mode`` runs once, with pirsyncd choosing (deletion_mode auto): for
tests about that choice itself, or that never sync. Without an rsync that handles
``--delete-missing-args`` the missing-args tests are skipped by hand and fail under CI (CI=true).

A test marked ``fanotify_too`` also runs with ``watch_backend = fanotify`` (ids ``inotify`` and
``fanotify``; tests/support/backends.py):

    .venv/bin/python -m pytest tests/integration -k "fanotify and not inotify"   # fanotify only

Its keywords choose a sample of a parametrised test for fanotify (the inotify run keeps them all):
``@pytest.mark.fanotify_too(target=("ssh", "rsync-url"))`` runs on fanotify only the cases whose
parameter ``target`` is one of those (both deletion paths still) — CI time the soak spends better.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import backends, rsyncs
from tests.support.mounts import Mounts


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "deletion_path" in metafunc.fixturenames and not metafunc.definition.get_closest_marker("auto_deletion_mode"):
        metafunc.parametrize("deletion_path", rsyncs.DELETION_PATHS, indirect=True)
    if "watch_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("fanotify_too"):
        metafunc.parametrize("watch_backend", backends.BACKENDS, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the fanotify cases a ``fanotify_too(NAME=VALUES)`` marker does not choose."""
    chosen, left_out = [], []
    for item in items:
        (left_out if _left_out_on_fanotify(item) else chosen).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = chosen


def _left_out_on_fanotify(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    marker = item.get_closest_marker("fanotify_too")
    if callspec is None or marker is None or callspec.params.get("watch_backend") != backends.FANOTIFY:
        return False
    return any(callspec.params.get(name) not in values for name, values in marker.kwargs.items())


@pytest.fixture(autouse=True)
def watch_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The watch backend of this test's daemons: inotify, and for a test marked ``fanotify_too``
    fanotify as well, on a tmpfs mounted at ``tmp_path`` before anything is made in it (this
    fixture is autouse, so it comes before the test's others), skipped with the probe's reason
    where filesystem marks cannot be had."""
    name: str = getattr(request, "param", backends.INOTIFY)
    if name == backends.FANOTIFY:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        mounts: Mounts = request.getfixturevalue("mounts")
        refusal = backends.fanotify_refusal(tmp_path)
        if refusal is None:
            assert not any(tmp_path.iterdir()), "tmp_path is written before the fanotify tmpfs is mounted on it"
            mounts.mount("-t", "tmpfs", "tmpfs", target=tmp_path)
            refusal = backends.fanotify_refusal(tmp_path)
        if refusal is not None:
            pytest.skip(f"watch_backend = fanotify is not possible here: {refusal}")
    with backends.using(name):
        yield name


@pytest.fixture(autouse=True)
def deletion_path(request: pytest.FixtureRequest) -> Iterator[rsyncs.DeletionPath | None]:
    """The deletion path of this test, current for the shared harness while the test runs."""
    name: str | None = getattr(request, "param", None)
    path = None if name is None else rsyncs.deletion_path(name)
    if name is not None and path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(rsyncs.missing_args_rsync_problem(), pytrace=False)
        pytest.skip(rsyncs.missing_args_rsync_problem())
    with rsyncs.using(path):
        yield path


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    """Mounts for the test to make; whatever is still mounted at its end is unmounted (lazily)."""
    registry = Mounts()
    try:
        yield registry
    finally:
        registry.unmount_everything()
