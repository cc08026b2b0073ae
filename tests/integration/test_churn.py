"""Seeded random churn against the real daemon: after any workload and a quiet period,
the destination equals the source. A failure prints the seed to replay it:

    PIRSYNCD_CHURN_SEED=1234 .venv/bin/python -m pytest tests/integration/test_churn.py -k mixed

More seeds (a longer run): PIRSYNCD_CHURN_SEEDS=200 .venv/bin/python -m pytest tests/integration/test_churn.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.trees import wait_until_equal
from tests.support.workload import PROFILES, Workload

SEEDS_PER_PROFILE = int(os.environ.get("PIRSYNCD_CHURN_SEEDS", "20"))
FIXED_SEED = os.environ.get("PIRSYNCD_CHURN_SEED")

pytestmark = pytest.mark.slow  # minutes: left out of -m "not slow" runs


def churn(tmp_path: Path, seed: int, profile: str, operations: int, rounds: int = 1,
          delay: str = "0.05") -> None:
    source, destination, outside = tmp_path / "source", tmp_path / "destination", tmp_path / "outside"
    for directory in (source, destination, outside):
        directory.mkdir()
    workload = Workload(source, seed, profile, outside)
    workload.run(operations // 4)  # something to sync at start
    daemon = Daemon(tmp_path / "daemon", "--source", str(source), "--destination", str(destination),
                    "--delay", delay)
    with daemon.start(timeout=120):
        for _ in range(rounds):
            workload.run(operations)
        try:
            wait_until_equal(source, destination, 120)
        except AssertionError as error:
            raise AssertionError(f"{workload.report()}\n{error}\n--- daemon log:\n{daemon.log()[-4000:]}") from None
        # Settled too: every change seen is confirmed sent, not retried forever.
        daemon.wait_synced(60)
        assert daemon.alive(), daemon.log()
        # Settled at once: a change made now is sent with no backoff the churn left behind
        # (nothing fails here, so any retry would be one the daemon caused itself).
        settled_at = len(daemon.log())
        (source / "after-the-churn").write_text("settled\n")
        daemon.wait_synced(60)
        assert (destination / "after-the-churn").read_text() == "settled\n"
        after = daemon.log()[settled_at:]
        assert "retry in" not in after and "IO error encountered" not in after, after
        assert daemon.status().get("state") == "in-sync" and not daemon.status().get("failing"), daemon.status()


def test_churn_of_a_thousand_operations_converges(tmp_path: Path) -> None:
    seed = int(FIXED_SEED or 20261125)
    churn(tmp_path, seed, "mixed", 1000)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("index", range(SEEDS_PER_PROFILE))
def test_churn_profiles(tmp_path: Path, profile: str, index: int) -> None:
    seed = int(FIXED_SEED) if FIXED_SEED else 1000 * (PROFILES.index(profile) + 1) + index
    churn(tmp_path, seed, profile, 150)
