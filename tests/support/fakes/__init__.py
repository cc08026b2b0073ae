"""Fakes as files (this directory): stand-ins the real daemon runs or imports, for what a
test cannot make the real thing do on demand. Never mocks of our own code.

- :data:`FAKE_RSYNC`: an rsync for ``--rsync-binary``, its behaviour chosen by ``FAKE_RSYNC_*``
  variables in the daemon's environment (the script's header lists them); otherwise the real rsync.
- :data:`WITHOUT_SYSTEMD_PYTHON`: a directory for ``PYTHONPATH`` where ``import systemd`` fails.
"""

from __future__ import annotations

from pathlib import Path

FAKES = Path(__file__).resolve().parent
FAKE_RSYNC = FAKES / "fake-rsync"
WITHOUT_SYSTEMD_PYTHON = FAKES / "python-without-systemd"
