"""A machine without systemd-python, for the real daemon: put this directory first in PYTHONPATH
and ``import systemd.daemon`` fails as if python3-systemd were not installed.

With ``PIRSYNCD_TEST_SYSTEMD_IMPORTS`` naming a file, each import attempt appends a line to it
first, so a test can tell that nothing tried.
"""

import os

_record = os.environ.get("PIRSYNCD_TEST_SYSTEMD_IMPORTS")
if _record:
    with open(_record, "a", encoding="utf-8") as record:
        record.write("import systemd\n")
raise ImportError("No module named 'systemd' (a test's stand-in for a machine without python3-systemd)")
