"""The fanotify mark's privilege (pirsyncd.source.capabilities): who gives it up, the sets read
from /proc/PID/status, and python-prctl loaded only by a worker that gives it up. The giving
up itself needs a process granted the capabilities: tests/integration/test_fanotify_privilege.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pirsyncd.config import exitcodes
from pirsyncd.source.capabilities import (
    CAP_DAC_READ_SEARCH,
    CAP_SETPCAP,
    CAP_SYS_ADMIN,
    Capabilities,
    NewMarkNeeded,
    granted_for_the_mark,
    parse_capabilities,
    read_capabilities,
)

# /proc/PID/status of a worker under the drop-in before the mark, and after it.
GRANTED = 1 << CAP_SYS_ADMIN | 1 << CAP_SETPCAP | 1 << CAP_DAC_READ_SEARCH
BEFORE = Capabilities(GRANTED, GRANTED, GRANTED, GRANTED, GRANTED)
AFTER = Capabilities(*(1 << CAP_DAC_READ_SEARCH,) * 5)


def status_text(capabilities: Capabilities) -> str:
    masks = (capabilities.inheritable, capabilities.permitted, capabilities.effective, capabilities.bounding,
             capabilities.ambient)
    sets = "".join(f"{name}:\t{mask:016x}\n" for name, mask in zip(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"),
                                                                     masks, strict=True))
    return f"Name:\tpirsyncd\nUmask:\t0027\nState:\tS (sleeping)\n{sets}NoNewPrivs:\t1\n"


def test_the_sets_are_read_from_proc_status() -> None:
    assert parse_capabilities(status_text(BEFORE)) == BEFORE
    assert parse_capabilities(status_text(AFTER)).holding(CAP_SYS_ADMIN) == []
    assert parse_capabilities(status_text(AFTER)).holding(CAP_DAC_READ_SEARCH) == [
        "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
    assert read_capabilities().bounding != 0  # this process's own, as the worker reads them


def test_a_user_granted_cap_sys_admin_gives_it_up_and_root_keeps_it() -> None:
    assert granted_for_the_mark(BEFORE, uid=998)
    assert not granted_for_the_mark(AFTER, uid=998), "nothing left to give up"
    assert not granted_for_the_mark(BEFORE, uid=0), "root's power is no grant for the mark"
    default_unit = Capabilities(*(1 << CAP_DAC_READ_SEARCH,) * 5)
    assert not granted_for_the_mark(default_unit, uid=998)


def test_a_new_mark_needed_is_its_own_exit_status_and_systemd_restarts_it() -> None:
    problem = NewMarkNeeded("/srv/www")
    assert problem.exit_status == exitcodes.NEW_MARK == 80
    assert str(problem).startswith("the source /srv/www is back on a file system the fanotify mark does not cover")
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "pirsyncd@.service").read_text()
    prevented = next(line for line in unit.splitlines() if line.startswith("RestartPreventExitStatus="))
    assert "80" not in prevented.split("=", 1)[1].split() and "Restart=on-failure" in unit


def test_python_prctl_is_not_imported_by_a_worker_that_gives_nothing_up() -> None:
    code = ("import sys, pirsyncd.cli, pirsyncd.service, pirsyncd.instance; "
            "from pirsyncd.source import capabilities; "
            "print(capabilities.give_up_mark_privilege(), 'prctl' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2]).stdout
    assert output.split() == ["False", "False"], output
