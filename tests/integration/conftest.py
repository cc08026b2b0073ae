"""Every integration test runs on both deletion paths, ids ``missing-args`` and ``parents``.

    .venv/bin/python -m pytest tests/integration -k parents        # one path only

A test marked ``auto_deletion_mode`` runs once, with pirsyncd choosing (deletion_mode auto): for
tests about that choice itself, or that never sync. Without an rsync that handles
``--delete-missing-args`` the missing-args tests are skipped by hand and fail under CI (CI=true).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import rsyncs
from tests.support.mounts import Mounts


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "deletion_path" in metafunc.fixturenames and not metafunc.definition.get_closest_marker("auto_deletion_mode"):
        metafunc.parametrize("deletion_path", rsyncs.DELETION_PATHS, indirect=True)


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
