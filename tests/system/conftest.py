"""Fixtures for the system tests: one booted Debian container per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.container import Container, nspawn_unavailable_reason

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    """A booted container with pirsyncd installed ($PIRSYNCD_DEB, else this checkout)."""
    reason = nspawn_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with Container() as booted:
        booted.install_pirsyncd(REPO_ROOT)
        yield booted
