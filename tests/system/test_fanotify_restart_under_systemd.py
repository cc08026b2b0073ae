"""The warm restart of pirsyncd@NAME under real systemd with watch_backend = fanotify and the
shipped drop-in (systemd/fanotify.conf.example), as tests/system/test_restart_under_systemd.py
checks it under inotify: the unprivileged worker writes the state (its directory index with
no watch), and a clean stop and start, and a SIGKILL that systemd answers with a restart, are
warm starts, with no full sync and an exact mirror. The container's nspawn filter lets the
fanotify calls through, as a host does (tests/system/test_fanotify_under_systemd.py).
"""

from __future__ import annotations

import pytest

from tests.system.container import Container
from tests.system.test_fanotify_under_systemd import FANOTIFY_DROP_IN
from tests.system.test_fanotify_under_systemd import container as container  # the filter widened
from tests.system.test_restart_under_systemd import restarts_are_warm
from tests.system.test_restart_under_systemd import state_removed as state_removed
from tests.system.test_systemd import Instances, read_status
from tests.system.test_systemd import instances as instances

pytestmark = pytest.mark.system


def test_restarts_under_fanotify_are_warm(container: Container, instances: Instances, state_removed: None) -> None:
    restarts_are_warm(container, instances, "watch_backend = fanotify\n", FANOTIFY_DROP_IN.read_text())
    status = read_status(container, "warm")
    assert status["watch_backend"] == "fanotify" and status["watched_dirs"] == 0, status
