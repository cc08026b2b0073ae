"""Shared fixtures: a source and a destination directory, a running daemon, a notify socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import rsyncs
from tests.support.daemon import Daemon
from tests.support.notify import NotifySocket

# Fake programs and packages (tests/support/fakes): files the daemon runs or imports, not test modules.
collect_ignore = ["support/fakes"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    return rsyncs.describe()


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    source, destination = tmp_path / "source", tmp_path / "destination"
    source.mkdir()
    destination.mkdir()
    return source, destination


@pytest.fixture
def mirror(tmp_path: Path, trees: tuple[Path, Path]) -> Iterator[tuple[Path, Path, Daemon]]:
    """A daemon mirroring an empty source with delay 0.1, in sync."""
    source, destination = trees
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", "0.1")
    with daemon.start():
        yield source, destination, daemon


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    """A bound notify socket (systemd's stand-in); give it to ``Daemon(..., notify=notify_socket)``."""
    with NotifySocket() as bound:
        yield bound
